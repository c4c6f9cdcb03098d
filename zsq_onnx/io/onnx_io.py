"""Reading user ONNX files defensively and writing ONNX files atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from zsq_onnx.errors import BadInputError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not target.is_relative_to(base):
            raise BadInputError(f"{path}: tensor {tensor.name!r} points to external data {location!r} outside the model's folder")
        if not target.is_file():
            raise BadInputError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing")


def check_finite_initializers(model: onnx.ModelProto, where: str) -> None:
    """Raise BadInputError naming the first float initializer that holds NaN or inf."""
    for tensor in model.graph.initializer:
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        if not np.isfinite(numpy_helper.to_array(tensor)).all():
            raise BadInputError(f"{where}: initializer {tensor.name!r} contains NaN or inf values")


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and validate a user's .onnx file; every problem is a one-line BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage input
        raise BadInputError(f"{path}: not an ONNX model ({_first_line(exc)})") from None
    if not model.graph.node:
        raise BadInputError(f"{path}: not an ONNX model (no graph nodes found)")
    _check_external_data(model, path)
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: fails the ONNX checker ({_first_line(exc)})") from None
    check_finite_initializers(model, str(path))
    return model


def load_ir(path: str | Path) -> ir.Model:
    """:func:`load_onnx` as the IR model the stages work on."""
    return ir.serde.deserialize_model(load_onnx(path))


def save_onnx(model: ir.Model | onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` through a temporary file and a rename: never half-written."""
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    return write_bytes_atomic(proto.SerializeToString(), path)


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Write a file through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write a text file through a temporary file and a rename."""
    return write_bytes_atomic(text.encode(), path)
