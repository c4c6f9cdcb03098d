"""What quantizers a model holds: per tensor, its role, bits, granularity and scale range."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from zsq_onnx.quantizers import registry
from zsq_onnx.quantizers.common import INTEGER_RANGES
from zsq_onnx.quantizers.registry import Role

_TYPE_RANGES = {**INTEGER_RANGES, onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


def _quantizer_row(tensor: str, role: str, consumer: str, scale: np.ndarray | None, zero_point: ir.TensorProtocol | None, qrange: tuple[int, int],
                   axis: int) -> dict:
    """A table row; without a stored ``scale`` (ranges computed in the graph) the granularity is
    ``granular`` and the scale and zero point fields are None."""
    qmin, qmax = qrange
    if scale is None:
        granularity = "granular"
    else:
        granularity = "per_tensor" if scale.ndim == 0 or scale.size == 1 else f"per_channel(axis={axis})"
    return {
        "tensor": tensor,
        "role": role,
        "consumer": consumer,
        "bits": int(math.log2(qmax - qmin + 1)),
        "signed": qmin < 0,
        "granularity": granularity,
        "scale_min": float(scale.min()) if scale is not None else None,
        "scale_max": float(scale.max()) if scale is not None else None,
        "zero_points_all_zero": bool((zero_point.numpy().astype(np.int64) == 0).all()) if zero_point is not None else None,
    }


def _zsq_row(node: ir.Node, consumer: str, axis: int) -> dict | None:
    """The row of a zsq quantizer, read by input role: one with a stored scale (static,
    adaptive) or a level count (granular); None for a bias quantizer, whose scale is its layer's
    input and weight scales (as emitted int32 biases, it is left out of the table)."""
    source, scale = registry.input_for(node, Role.SOURCE), registry.input_for(node, Role.SCALE)
    qrange = registry.integer_range(node)
    if source is None or qrange is None or (scale is None and not registry.inputs_for(node, Role.LEVELS)):
        return None
    zero_point = registry.input_for(node, Role.ZERO_POINT)
    role = "weight" if source.const_value is not None else "activation"
    return _quantizer_row(source.name, role, consumer, scale.const_value.numpy() if scale is not None else None,
                          zero_point.const_value if zero_point is not None else None, qrange, axis)


def _stored_range(values: np.ndarray, container: tuple[int, int]) -> tuple[int, int]:
    """The level range that stored integer weights actually need: an 8-bit container holding
    3-bit symmetric weights (-3..3) reads as 3 bits."""
    if values.size == 0:
        return container
    if container[0] < 0:
        bits = 1 + math.ceil(math.log2(int(np.abs(values).max()) + 1))
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bits = math.ceil(math.log2(int(values.max()) + 1))
    return 0, (1 << bits) - 1


def quantizer_table(model: ir.Model) -> list[dict]:
    """One row per weight or activation quantizer, for emitted QDQ models and for intermediate
    models with zsq nodes (bias quantizers are left out of both)."""
    rows = []
    for node in model.graph:
        axis = node.attributes.get_int("axis", 1)
        consumer = ", ".join(f"{r.op_type} {r.name}" for r in node.outputs[0].consumers())
        inputs = node.inputs
        if registry.kind_of(node) is not None:
            row = _zsq_row(node, consumer, axis)
            if row is not None:
                rows.append(row)
        elif node.op_type == "DequantizeLinear" and len(inputs) > 2 and inputs[2] is not None and inputs[2].const_value is not None:
            zero_point = inputs[2].const_value
            qrange = _TYPE_RANGES.get(int(zero_point.dtype), (0, 255))
            source = inputs[0]
            clip = source.producer()
            if clip is not None and clip.op_type == "Clip" and all(v is not None and v.const_value is not None for v in clip.inputs[1:3]):
                qrange = tuple(int(v.const_value.numpy()) for v in clip.inputs[1:3])
                source = clip.inputs[0]
            if source.const_value is not None:
                role, tensor = "weight", source.name
                qrange = _stored_range(source.const_value.numpy().astype(np.int64), qrange)
            else:
                quantize = source.producer()
                role, tensor = "activation", quantize.inputs[0].name if quantize is not None else source.name
            rows.append(_quantizer_row(tensor, role, consumer, inputs[1].const_value.numpy(), zero_point, qrange, axis))
    return rows


def inspect_model(model: ir.Model) -> dict:
    """Quantizer table, op counts and serialized size of a model."""
    return {
        "size_bytes": ir.serde.serialize_model(model).ByteSize(),
        "ops": dict(Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph).most_common()),
        "quantizers": quantizer_table(model),
    }


def describe(result: dict) -> str:
    """The inspection as a text table."""
    lines = [f"size {result['size_bytes'] / 1024:.1f} KiB; ops " + ", ".join(f"{k} {v}" for k, v in result["ops"].items())]
    lines.append(f"{'role':<10} {'bits':>4} {'type':<6} {'granularity':<20} {'scale range':<23} tensor")
    for row in result["quantizers"]:
        kind = "int" if row["signed"] else "uint"
        scales = f"{row['scale_min']:.3g}..{row['scale_max']:.3g}" if row["scale_min"] is not None else "computed in graph"
        lines.append(f"{row['role']:<10} {row['bits']:>4} {kind:<6} {row['granularity']:<20} {scales}".ljust(66) + f" {row['tensor']}")
    return "\n".join(lines)
