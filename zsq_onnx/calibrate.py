"""Activation ranges over synthetic batches: per-tensor min/max, computed by ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx

from zsq_onnx.validate import make_session


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names``."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    present = {o.name for o in result.graph.output}
    result.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    return result


def minmax_ranges(model: onnx.ModelProto, names: Sequence[str], batches: Iterable[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-tensor (min, max) of each tensor in ``names`` over all ``batches``, run in ORT."""
    names = list(names)
    session = make_session(with_outputs(model, names))
    input_name = session.get_inputs()[0].name
    low = {name: np.float32(np.inf) for name in names}
    high = {name: np.float32(-np.inf) for name in names}
    for batch in batches:
        values = session.run(names, {input_name: np.asarray(batch, np.float32)})
        for name, value in zip(names, values):
            low[name] = min(low[name], np.float32(value.min()))
            high[name] = max(high[name], np.float32(value.max()))
    return {name: (np.array(low[name]), np.array(high[name])) for name in names}
