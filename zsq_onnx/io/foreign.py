"""ONNX files as users bring them, made ready to convert, and their interface restored at the end.

At load: the default-domain opset is converted to the quantizers' opset by ``onnx.version_converter``
(an op it cannot convert is a BadInputError naming it); initializers listed as graph inputs stop
being inputs; with several outputs the classifier's is chosen; the exporters' CastLike, Identity and
Constant nodes and constant shape arithmetic are folded; an NHWC input read through a Transpose
(tf2onnx) becomes NCHW; a fixed batch size becomes symbolic and symbolic image dimensions take
``--input-shape``. The declared interface (input and output shapes and layout) is recorded in the
model's metadata, and :func:`restore_interface` puts it back on the emitted model and tells the
user what differs from the file (its opset, the output chosen) once the conversion succeeded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx import version_converter
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.io.export import OPSET, tidy
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.cast_like import CastLikeToCastPass
from zsq_onnx.passes.free_batch import FreeBatchPass

logger = logging.getLogger(__name__)

INTERFACE_KEY = "zsq.declared_interface"
CONVERSION_KEY = "zsq.opset_conversion"
BATCH = "batch"
NHWC_TO_NCHW = (0, 3, 1, 2)
Dims = list[int | str | None]


@dataclass(frozen=True)
class ForeignOptions:
    """What a user tells about a foreign file: the classifier output among several
    (``--output-name``) and the image shape (C, H, W) for symbolic dimensions (``--input-shape``)."""

    output_name: str | None = None
    input_shape: tuple[int, ...] | None = None

    @classmethod
    def from_flags(cls, output_name: str | None, input_shape: str | None) -> ForeignOptions:
        """The options as the CLI spells them; ``input_shape`` as ``C,H,W``."""
        if input_shape is None:
            return cls(output_name)
        try:
            dims = tuple(int(part) for part in input_shape.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) <= 0:
            raise BadInputError(f"--input-shape takes three positive sizes C,H,W, got {input_shape!r}")
        return cls(output_name, dims)

    @property
    def given(self) -> bool:
        """Whether any option was given (they apply to .onnx files only)."""
        return self.output_name is not None or self.input_shape is not None


def prepare(proto: onnx.ModelProto, where: str, options: ForeignOptions | None = None) -> ir.Model:
    """A validated user model (see :func:`zsq_onnx.io.onnx_io.load_onnx`) as the stages need it:
    opset ``OPSET``, one image input with a symbolic batch and fixed (C, H, W), one output."""
    options = options or ForeignOptions()
    declared = _declared_interface(proto)
    notes = []
    if declared["opset"] != OPSET:
        notes.append(f"the emitted model is opset {OPSET}; {where} was opset {declared['opset']} (converted at load by onnx.version_converter)")
    proto = upgrade_opset(proto, where)
    _drop_initializer_inputs(proto)
    notes += _select_output(proto, options.output_name, where)
    model = tidy(apply_passes(ir.serde.deserialize_model(proto), ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True), CastLikeToCastPass()))
    transpose = _absorb_input_transpose(model)
    if options.input_shape is not None:
        _fix_image_dims(model, options.input_shape, where)
    model = free_batch(model, where)
    outputs = {value.name: declared["outputs"].get(value.name) for value in model.graph.outputs}
    interface = {"inputs": declared["inputs"], "outputs": outputs, "input_transpose": transpose, "notes": notes}
    model.metadata_props[INTERFACE_KEY] = json.dumps(interface)
    return model


def _dims(value: onnx.ValueInfoProto) -> Dims | None:
    if not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


def _declared_interface(proto: onnx.ModelProto) -> dict:
    initializers = {tensor.name for tensor in proto.graph.initializer}
    return {
        "inputs": {value.name: _dims(value) for value in proto.graph.input if value.name not in initializers},
        "outputs": {value.name: _dims(value) for value in proto.graph.output},
        "opset": _default_opset(proto),
    }


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 1)


def upgrade_opset(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``proto`` at default-domain opset ``OPSET``, converted by ``onnx.version_converter`` when it
    has another; the conversion is recorded in the metadata."""
    found = _default_opset(proto)
    if found == OPSET:
        return proto
    try:
        converted = version_converter.convert_version(proto, OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ValueError/onnx's own C++ errors
        raise BadInputError(f"{where}: onnx.version_converter cannot convert it from opset {found} to {OPSET}: {_converter_reason(exc, proto)}") from None
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)]))
    entry = converted.metadata_props.add()
    entry.key, entry.value = CONVERSION_KEY, f"ai.onnx opset {found} -> {OPSET} by onnx.version_converter (onnx {onnx.__version__})"
    logger.info("%s: converted from opset %d to opset %d with onnx.version_converter", where, found, OPSET)
    return converted


def _converter_reason(exc: BaseException, proto: onnx.ModelProto) -> str:
    """The converter's assertion without its C++ location, led by the op and versions of the
    adapter that failed when its name tells them (``adapt_scan_8_9``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    detail = text.split("failed: ", 1)[-1]
    adapter = re.search(r"adapt_([A-Za-z0-9]+)_(\d+)_(\d+)", text)
    if adapter is None:
        return detail
    ops = {node.op_type.lower(): node.op_type for node in proto.graph.node}
    op = ops.get(adapter.group(1).lower(), adapter.group(1))
    return f"{op} from opset {adapter.group(2)} to {adapter.group(3)}: {detail}"


def _drop_initializer_inputs(proto: onnx.ModelProto) -> None:
    """Initializers that old exporters also list as graph inputs are constants, not inputs."""
    initializers = {tensor.name for tensor in proto.graph.initializer}
    kept = [value for value in proto.graph.input if value.name not in initializers]
    if len(kept) < len(proto.graph.input):
        logger.info("%d initializers were also listed as graph inputs: treated as constants", len(proto.graph.input) - len(kept))
        del proto.graph.input[:]
        proto.graph.input.extend(kept)


def _select_output(proto: onnx.ModelProto, name: str | None, where: str) -> list[str]:
    """Keep one graph output: ``name``, or the only one, or the only one of rank 2 (logits); a
    note for the user when the choice was made here."""
    outputs = list(proto.graph.output)
    names = [value.name for value in outputs]
    notes = []
    if name is not None:
        if name not in names:
            raise BadInputError(f"{where}: --output-name {name!r} is not an output of the model; its outputs are {', '.join(names)}")
        chosen = outputs[names.index(name)]
    elif len(outputs) == 1:
        return notes
    else:
        ranked = [value for value in outputs if len(_dims(value) or []) == 2]
        if len(ranked) != 1:
            raise BadInputError(f"{where}: has {len(outputs)} outputs ({', '.join(names)}) and no single classifier output among them: choose one with --output-name NAME")
        chosen = ranked[0]
        notes.append(f"{where} has {len(outputs)} outputs; the emitted model has {chosen.name!r}, the only one of shape [batch, classes] (--output-name chooses another)")
    del proto.graph.output[:]
    proto.graph.output.append(chosen)
    return notes


def _absorb_input_transpose(model: ir.Model) -> list[int] | None:
    """An NHWC image input read only through Transpose<perm=[0, 3, 1, 2]> (tf2onnx's files)
    becomes an NCHW input, as the stages and the preprocessing take it; the perm, or None."""
    inputs = [value for value in model.graph.inputs if value.const_value is None]
    if len(inputs) != 1 or inputs[0].shape is None or len(inputs[0].shape) != 4:
        return None
    value = inputs[0]
    users = [node for node, _ in value.uses()]
    if not users or any(node.op_type != "Transpose" or tuple(node.attributes.get_ints("perm", ())) != NHWC_TO_NCHW for node in users):
        return None
    for node in users:
        node.outputs[0].replace_all_uses_with(value, replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
    value.shape = ir.Shape([value.shape[i] for i in NHWC_TO_NCHW])
    logger.info("input %r is NHWC and read through Transpose: converted as NCHW, emitted with the Transpose", value.name)
    return list(NHWC_TO_NCHW)


def _restore_input_transpose(model: ir.Model, perm: list[int]) -> None:
    """Put back the input Transpose that :func:`_absorb_input_transpose` removed."""
    graph = model.graph
    nchw = graph.inputs[0]
    name = nchw.name
    nchw.name = f"{name}.nchw"
    source = ir.val(name, nchw.dtype, ir.Shape([nchw.shape[perm.index(axis)] for axis in range(len(perm))]) if nchw.shape is not None else None)
    transpose = ir.node("Transpose", [source], {"perm": perm}, name=f"{name}.to_nchw")
    nchw.replace_all_uses_with(transpose.outputs[0])
    transpose.outputs[0].name, transpose.outputs[0].dtype, transpose.outputs[0].shape = nchw.name, nchw.dtype, nchw.shape
    graph.inputs[0] = source
    graph.insert_before(next(iter(graph)), transpose)


def _fix_image_dims(model: ir.Model, shape: tuple[int, ...], where: str) -> None:
    """Give the image input the (C, H, W) of ``--input-shape`` where its dimensions are symbolic;
    a fixed dimension must agree with it."""
    inputs = [v for v in model.graph.inputs if v.const_value is None]
    if len(inputs) != 1:
        raise BadInputError(f"{where}: --input-shape needs one image input, the model has {len(inputs)}")
    value = inputs[0]
    if value.shape is None or len(value.shape) != len(shape) + 1:
        raise BadInputError(f"{where}: --input-shape {','.join(map(str, shape))} does not fit input {value.name!r} of shape {_text(value)}")
    for declared, given in zip(value.shape[1:], shape):
        if isinstance(declared, int) and declared != given:
            raise BadInputError(f"{where}: --input-shape {','.join(map(str, shape))} contradicts input {value.name!r} of shape {_text(value)}")
    value.shape = ir.Shape([value.shape[0], *shape])


def _text(value: ir.Value) -> str:
    return "[" + ", ".join(str(d) for d in value.shape) + "]" if value.shape is not None else "unknown"


def free_batch(model: ir.Model, where: str) -> ir.Model:
    """``model`` with a symbolic batch in place of the fixed size its inputs start with (see
    :class:`FreeBatchPass`), checked by one ORT run at another size; BadInputError when only
    the fixed size runs."""
    inputs = [value for value in model.graph.inputs if value.const_value is None]
    fixed = inputs[0].shape[0] if len(inputs) == 1 and inputs[0].shape is not None and len(inputs[0].shape) > 0 else None
    model = apply_passes(model, FreeBatchPass(BATCH), RemoveUnusedNodesPass())
    if isinstance(fixed, int):
        _probe_batch(model, fixed, where)
    return model


def _probe_batch(model: ir.Model, batch: int, where: str) -> None:
    """Run the model once in ORT at another batch size than the file's ``batch``: BadInputError
    when only the file's runs (a batch size built into the graph that :class:`FreeBatchPass`
    cannot free)."""
    value = model.graph.inputs[0]
    session = make_session(model, purpose="batch-probe")
    dims = [d if isinstance(d, int) else 1 for d in value.shape[1:]]

    def run(size: int) -> str | None:
        try:
            session.run(None, {value.name: np.zeros((size, *dims), value.dtype.numpy())})
        except Exception as exc:  # onnxruntime's own exception types
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    failure = run(batch + 1)
    if failure is not None and run(batch) is None:
        raise BadInputError(f"{where}: the batch size {batch} is built into the graph, so the model runs only at that batch size (at {batch + 1}: {failure}); "
                            "re-export it with a dynamic batch axis (torch.onnx.export dynamic_axes or dynamic_shapes)")


def restore_interface(model: ir.Model) -> ir.Model:
    """``model`` with the input and output shapes and layout the user's file declared (a fixed
    batch and image size, or symbolic ones fixed by ``--input-shape``), when :func:`prepare`
    recorded them; what differs from the file (opset, chosen output) is logged as a warning."""
    text = model.metadata_props.pop(INTERFACE_KEY, None)
    if text is None:
        return model
    declared = json.loads(text)
    if declared["input_transpose"]:
        _restore_input_transpose(model, declared["input_transpose"])
    for note in declared["notes"]:
        logger.warning("%s", note)
    loosened = False
    for values, shapes in ((model.graph.inputs, declared["inputs"]), (model.graph.outputs, declared["outputs"])):
        for value in values:
            dims = shapes.get(value.name)
            if dims is None or value.shape is None or len(dims) != len(value.shape):
                continue
            loosened |= any(not isinstance(d, int) and isinstance(w, int) for d, w in zip(dims[1:], value.shape[1:]))
            value.shape = ir.Shape(dims)
    if loosened:
        for node in model.graph:
            for value in node.outputs:
                if not value.is_graph_output():
                    value.shape = None
    return model
