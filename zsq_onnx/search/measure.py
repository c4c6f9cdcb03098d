"""Measurements a search scores candidates by, run in ONNX Runtime: the error a candidate
quantizer causes at the layers reading its tensor, and the CPU time of quantized blocks and
whole graphs (timed back to back with the FP32 graph so that load on the machine cancels out).
Errors are measured as float QDQ, the same on every CPU; times with the integer kernels ORT CPU
deploys.

Times differ between processes, so in a torch.distributed group rank 0 alone times (the others
wait) and every rank takes its figures: every rank then makes the same choices."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.executors.runtime import Execution, latency_ms, make_session
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.search.probe import OutputPairs
from zsq_onnx.validate.metrics import power_ratio_db, signal_and_noise

logger = logging.getLogger(__name__)

COST_BATCH = 64


def reader_sqnr(probe: ir.Model, pairs: OutputPairs, batches: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """SQNR (dB) per tensor and candidate kind at the readers' outputs of a probe model (see
    :func:`~zsq_onnx.search.probe.probe_model`), signal and noise summed over ``batches``."""
    session = make_session(probe, purpose="search-error")
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    noise = dict.fromkeys(pairs, 0.0)
    signal = dict.fromkeys(pairs, 0.0)
    for batch in batches:
        values = dict(zip(names, session.run(names, {input_name: np.asarray(batch, np.float32)})))
        for key, outputs in pairs.items():
            for reference, quantized in outputs:
                batch_signal, batch_noise = signal_and_noise(values[reference], values[quantized])
                signal[key] += batch_signal
                noise[key] += batch_noise
    result: dict[str, dict[str, float]] = {}
    for (tensor, kind), value in noise.items():
        result.setdefault(tensor, {})[kind] = power_ratio_db(signal[(tensor, kind)], value)
    return result


def block_cost_ms(block: ir.Model, shapes: Mapping[str, tuple[int, ...]], repeats: int = 10) -> float:
    """ORT CPU milliseconds of one run of an emitted block on random inputs of ``shapes`` (rank 0's)."""
    def cost() -> list[float]:
        session = make_session(block, execution=Execution.INTEGER, purpose="search-latency")
        rng = np.random.default_rng(0)
        return [latency_ms(session, {i.name: rng.standard_normal(shapes[i.name]).astype(np.float32) for i in session.get_inputs()}, repeats)]

    return distributed.from_main(cost, 1)[0]


def batch_shapes(model: ir.Model, names: list[str], sample: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape at batch COST_BATCH, from one run on a single sample."""
    session = make_session(with_outputs(model, names), purpose="search-shapes")
    values = session.run(names, {session.get_inputs()[0].name: np.asarray(sample, np.float32)})
    return {name: (COST_BATCH, *value.shape[1:]) for name, value in zip(names, values)}


def latency_vs(reference: ir.Model, sample_shape: tuple[int, ...]) -> Callable[[ir.Model], float]:
    """A timer of emitted models at batch COST_BATCH, each as a ratio to ``reference`` timed
    right after it (rank 0's)."""
    sample = np.zeros((COST_BATCH, *sample_shape), np.float32)
    baseline = make_session(reference, execution=Execution.INTEGER, purpose="search-latency") if distributed.world().main else None

    def relative(model: ir.Model) -> float:
        return distributed.from_main(lambda: [latency_ms(make_session(model, execution=Execution.INTEGER, purpose="search-latency"), sample) / latency_ms(baseline, sample)], 1)[0]

    return relative
