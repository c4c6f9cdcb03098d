"""ONNX Runtime sessions: creation on a provider with a declared execution, batched runs, latency.

ORT CPU fuses QuantizeLinear/DequantizeLinear groups into integer kernels (QLinearConv, QGemm)
at its EXTENDED level and above, and which integer kernel runs depends on the CPU: x86 CPUs
without VNNI add u8 x s8 products in pairs with int16 saturation. Every session therefore says
how it executes quantized graphs (:class:`Execution`): measurements take float QDQ, which
computes the graph as written on every CPU; only sessions that time or validate what ORT CPU
deploys take its integer kernels."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from zsq_onnx.errors import BadInputError

logger = logging.getLogger(__name__)

BATCH_BYTES = 256 << 20
ACTIVATIONS_PER_INPUT = 16  # ORT reuses buffers: live activations stay within a few times a layer's size
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
DISABLE_QDQ_FUSION = "session.disable_quant_qdq"
MIN_REPEATS = 3


class Execution(enum.StrEnum):
    """How ORT CPU runs the quantizers of a graph."""

    FLOAT_QDQ = "float-qdq"
    """QuantizeLinear/DequantizeLinear computed as written and every layer in float kernels (ORT's
    QDQ fusion off, its float optimizations on): the same on every CPU, to float rounding."""

    INTEGER = "integer"
    """QDQ groups fused into integer kernels, as ORT CPU deploys the model: exact only where no
    kernel can saturate (see :func:`zsq_onnx.executors.ort_graph.saturating_kernels`)."""


def describe_execution(execution: Execution, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> str:
    """How a session runs, for reports: its optimization level and its execution of QDQ."""
    how = "QDQ in float kernels (QDQ fusion off)" if execution == Execution.FLOAT_QDQ else "QDQ fused into ORT CPU integer kernels"
    return f"{level.name}, {how}"


_recording: dict[str, Path | count] = {}


@contextmanager
def recording_optimized_graphs(folder: str | Path) -> Iterator[Path]:
    """While active, every CPU session writes the graph ORT actually runs to ``folder`` as
    ``NNN.<purpose>.<execution>.onnx``, so a test or a user can check which kernels ran."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _recording.update(folder=folder, index=count())
    try:
        yield folder
    finally:
        _recording.clear()


def session_options(execution: Execution, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.SessionOptions:
    """ORT session options for ``execution`` at ``level``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if execution == Execution.FLOAT_QDQ:
        options.add_session_config_entry(DISABLE_QDQ_FUSION, "1")
    return options


def make_session(
    model: ir.Model | onnx.ModelProto | str,
    provider: str = "cpu",
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    execution: Execution = Execution.FLOAT_QDQ,
    purpose: str = "measure",
) -> ort.InferenceSession:
    """An ORT session for a model (IR, proto or path) on ``provider`` (cpu or cuda), running its
    quantizers as ``execution`` says (float QDQ unless a caller asks for integer kernels);
    ``purpose`` names it in logs and recorded graphs. The one place inside the pipeline where
    an IR model becomes bytes."""
    if PROVIDERS.get(provider) not in ort.get_available_providers():
        raise BadInputError(f"provider {provider!r} is not available in this onnxruntime ({', '.join(ort.get_available_providers())})")
    options = session_options(execution, level)
    if _recording and provider == "cpu":
        options.optimized_model_filepath = str(_recording["folder"] / f"{next(_recording['index']):03d}.{purpose}.{execution}.onnx")
    if isinstance(model, ir.Model):
        model = ir.serde.serialize_model(model)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    logger.debug("ORT session for %s (%s, %s) of %s", purpose, PROVIDERS[provider], describe_execution(execution, level),
                 f"a {len(source) / 1024:.1f} KiB model" if isinstance(source, bytes) else source)
    return ort.InferenceSession(source, options, providers=[PROVIDERS[provider]])


def batch_size_for(inputs: np.ndarray, expansion: float = 1.0, limit: int = 256) -> int:
    """How many samples of ``inputs`` to run at once so that ``expansion`` times their size stays
    within ``BATCH_BYTES``."""
    per_sample = max(1, inputs[:1].nbytes) * expansion
    return int(max(1, min(limit, BATCH_BYTES // per_sample)))


def run_batched(session: ort.InferenceSession, inputs: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """First output of ``session`` over ``inputs`` in batches (by default as many samples as
    keep a network's activations within ``BATCH_BYTES``, see :func:`batch_size_for`), concatenated."""
    name = session.get_inputs()[0].name
    size = batch_size or batch_size_for(inputs, ACTIVATIONS_PER_INPUT)
    return np.concatenate([session.run(None, {name: inputs[i : i + size]})[0] for i in range(0, len(inputs), size)])


def latency_ms(session: ort.InferenceSession, sample: np.ndarray | dict[str, np.ndarray], repeats: int = 20, budget_s: float | None = None) -> float:
    """Median wall time of one ``session.run`` on ``sample`` (the first input's array, or feeds by
    name), in milliseconds, after a warm-up; with ``budget_s``, timing stops once that many
    seconds have passed and at least ``MIN_REPEATS`` runs were timed (a large model at batch 64
    then costs seconds, not minutes)."""
    feeds = sample if isinstance(sample, dict) else {session.get_inputs()[0].name: sample}
    session.run(None, feeds)
    times: list[float] = []
    while len(times) < repeats and not (budget_s is not None and len(times) >= MIN_REPEATS and sum(times) > budget_s):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
