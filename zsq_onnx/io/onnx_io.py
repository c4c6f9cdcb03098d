"""Reading user ONNX files defensively and writing ONNX files atomically.

Every problem of a user's file is found at load time and reported as one BadInputError naming the
file: unreadable or invalid protobuf, external data, NaN weights, an IR version or opset the
installed onnxruntime cannot load, declared shapes that contradict the graph, empty inputs.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from zsq_onnx.errors import BadInputError

logger = logging.getLogger(__name__)


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
    check_runtime_support(model, str(path))
    _check_external_data(model, path)
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: fails the ONNX checker ({_first_line(exc)})") from None
    check_finite_initializers(model, str(path))
    check_inputs_not_empty(model, str(path))
    check_shapes(model, str(path))
    logger.info("%s: IR version %d, opsets %s, %d nodes, %d initializers", path, model.ir_version, _opsets(model), len(model.graph.node), len(model.graph.initializer))
    return model


def _opsets(model: onnx.ModelProto) -> str:
    return ", ".join(f"{entry.domain or 'ai.onnx'} {entry.version}" for entry in model.opset_import)


def check_runtime_support(model: onnx.ModelProto, where: str) -> None:
    """Raise BadInputError when the installed onnxruntime cannot load a model of this IR version
    and these opsets (a newer ONNX than it knows). onnxruntime itself answers, on an empty graph
    that carries them, so the check costs milliseconds whatever the model's size."""
    import onnxruntime as ort

    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    probe = onnx.helper.make_model(onnx.helper.make_graph([], "probe", [value], [value]), ir_version=model.ir_version, opset_imports=model.opset_import)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        raise BadInputError(f"{where}: onnxruntime {ort.__version__} cannot load IR version {model.ir_version} with opsets {_opsets(model)}: {_runtime_reason(exc)}") from None


def _runtime_reason(exc: BaseException) -> str:
    """The last sentence of an onnxruntime error, after the C++ location and signature it starts with."""
    tail = _first_line(exc).rsplit(") ", 1)[-1]
    return re.split(r"(?<=\.)\s+", tail.strip())[-1]


def check_inputs_not_empty(model: onnx.ModelProto, where: str) -> None:
    """Raise BadInputError when a graph input declares a dimension of size zero (or less)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and any(d.HasField("dim_value") and d.dim_value <= 0 for d in dims):
            raise BadInputError(f"{where}: input {value.name!r} is empty: it declares shape {_shape_text(dims)}")


def _shape_text(dims) -> str:
    return "[" + ", ".join(d.dim_param or str(d.dim_value) if d.HasField("dim_value") or d.dim_param else "?" for d in dims) + "]"


def check_shapes(model: onnx.ModelProto, where: str) -> None:
    """Raise BadInputError when the shapes the file declares contradict its graph: ONNX shape
    inference in strict mode checks the declared inputs, outputs and value_info against what the
    nodes compute; it does not check a Conv's input channels against its weight, done here."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        reason = re.sub(r"\[\w+\] |Inference error\(s\): ", "", _first_line(exc))
        raise BadInputError(f"{where}: declares shapes that contradict themselves: {reason}") from None
    shapes = {tensor.name: list(tensor.dims) for tensor in inferred.graph.initializer}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else None for d in dims])
    for node in inferred.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        data, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not data or not weight or len(data) < 2 or len(weight) < 2 or None in (data[1], weight[1]):
            continue
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        if data[1] != weight[1] * group:
            raise BadInputError(f"{where}: declares shapes that contradict themselves: Conv {node.name or node.output[0]!r} reads {node.input[0]!r} with {data[1]} channels, "
                                f"but its weight {node.input[1]!r} {weight} with group {group} takes {weight[1] * group}")
    logger.debug("%s: declared shapes agree with shape inference (%d tensors inferred)", where, len(shapes))


def image_input_shape(model: ir.Model, where: str) -> tuple[int, ...]:
    """The non-batch dimensions of the model's one image input; BadInputError unless they are fixed."""
    inputs = [value for value in model.graph.inputs if value.const_value is None]
    if len(inputs) != 1:
        raise BadInputError(f"{where}: expected one image input, found {len(inputs)}")
    dims = list(inputs[0].shape or [])[1:]
    if not dims or any(not isinstance(d, int) for d in dims):
        raise BadInputError(f"{where}: input {inputs[0].name!r} needs fixed non-batch dimensions, got {[str(d) for d in dims]}; give them with --input-shape C,H,W")
    return tuple(dims)


def load_ir(path: str | Path) -> ir.Model:
    """:func:`load_onnx` as the IR model the stages work on."""
    return ir.serde.deserialize_model(load_onnx(path))


def save_onnx(model: ir.Model | onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` through a temporary file and a rename: never half-written."""
    data = onnx_bytes(model)
    logger.info("writing %s (%.1f KiB)", path, len(data) / 1024)
    return write_bytes_atomic(data, path)


def onnx_bytes(model: ir.Model | onnx.ModelProto) -> bytes:
    """The serialized .onnx file of ``model``."""
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString()


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Write a file through a temporary file and a rename; a path that cannot be written (a
    folder, no permission) is a BadInputError naming it."""
    return write_files_atomic({Path(path): data})[0]


def write_files_atomic(files: Mapping[Path, bytes]) -> list[Path]:
    """Write several files that belong together (a model and its report): each goes to a
    temporary file beside it first, and only when all of them are written are they renamed into
    place, so a failure (no space, no permission) leaves none of them. Each file gets the mode
    ``open`` would give it: the existing file's, or 0666 less the umask for a new one."""
    staged: dict[Path, str] = {}
    path = None
    try:
        for path, data in files.items():
            staged[path] = _stage(path, data)
        for path, temp in staged.items():
            os.replace(temp, path)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    finally:
        for temp in staged.values():
            if os.path.exists(temp):
                os.unlink(temp)
    return list(files)


def _stage(path: Path, data: bytes) -> str:
    """``data`` in a new temporary file beside ``path``, with the mode ``path`` will have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "wb") as stream:
        os.fchmod(stream.fileno(), _mode_for(path))
        stream.write(data)
    return temp


def _mode_for(path: Path) -> int:
    """The permission bits of ``path`` when it exists, else those a new file gets under this
    process's umask (mkstemp's own 0600 would hide the file from every other user)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_writable(path: str | Path, flag: str) -> None:
    """BadInputError unless a file can be written at ``path`` (``flag`` names the option that
    gave it): not a folder, and its folder exists and is writable, or can be created."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder; give {flag} a file name to write")
    folder = next((parent for parent in path.absolute().parents if parent.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"{path}: cannot be written ({folder} is not a writable folder)")
