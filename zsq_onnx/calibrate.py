"""Activation ranges over calibration batches: min/max per tensor or per channel, run in ORT."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
import onnx

from zsq_onnx.errors import BadInputError
from zsq_onnx.runtime import make_session


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names``."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    present = {o.name for o in result.graph.output}
    result.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    return result


def minmax_ranges(
    model: onnx.ModelProto, names: Sequence[str], batches: Iterable[np.ndarray], per_channel: Collection[str] = ()
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(min, max) of each tensor in ``names`` over all ``batches``, run in ORT: scalars, or
    vectors over axis 1 for the tensors in ``per_channel``."""
    names = list(names)
    if not names:
        return {}
    session = make_session(with_outputs(model, names))
    input_name = session.get_inputs()[0].name
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for batch in batches:
        values = session.run(names, {input_name: np.asarray(batch, np.float32)})
        for name, value in zip(names, values):
            axes = tuple(i for i in range(value.ndim) if i != 1) if name in per_channel and value.ndim > 1 else None
            batch_low, batch_high = value.min(axis=axes), value.max(axis=axes)
            low[name] = np.minimum(low[name], batch_low) if name in low else batch_low
            high[name] = np.maximum(high[name], batch_high) if name in high else batch_high
    if not low:
        raise BadInputError("no calibration batches were given")
    return {name: (np.asarray(low[name], np.float32), np.asarray(high[name], np.float32)) for name in names}
