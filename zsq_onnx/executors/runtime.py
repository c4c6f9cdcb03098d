"""ONNX Runtime sessions: creation on a provider, batched runs, latency."""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from zsq_onnx.errors import BadInputError

logger = logging.getLogger(__name__)

BATCH_BYTES = 256 << 20
ACTIVATIONS_PER_INPUT = 16  # ORT reuses buffers: live activations stay within a few times a layer's size
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(
    model: ir.Model | onnx.ModelProto | str, provider: str = "cpu", level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
) -> ort.InferenceSession:
    """An ORT session for a model (IR, proto or path) on ``provider`` (cpu or cuda): the one
    place inside the pipeline where an IR model becomes bytes."""
    if PROVIDERS.get(provider) not in ort.get_available_providers():
        raise BadInputError(f"provider {provider!r} is not available in this onnxruntime ({', '.join(ort.get_available_providers())})")
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if isinstance(model, ir.Model):
        model = ir.serde.serialize_model(model)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    logger.debug("ORT session (%s, %s) of %s", PROVIDERS[provider], level.name, f"a {len(source) / 1024:.1f} KiB model" if isinstance(source, bytes) else source)
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


def latency_ms(session: ort.InferenceSession, sample: np.ndarray | dict[str, np.ndarray], repeats: int = 20) -> float:
    """Median wall time of one ``session.run`` on ``sample`` (the first input's array, or feeds by
    name), in milliseconds, after a warm-up."""
    feeds = sample if isinstance(sample, dict) else {session.get_inputs()[0].name: sample}
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
