"""What quantizers a model holds: per tensor, its role, bits, granularity, levels and scale range
(alpha's range for lookup-table weights, whose table is listed too)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from zsq_onnx.options import WeightLevels
from zsq_onnx.quantizers import registry
from zsq_onnx.quantizers.common import INTEGER_RANGES
from zsq_onnx.quantizers.lut import LUT, level_table
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
        "levels": WeightLevels.UNIFORM.value,
        "table": None,
    }


def _table_name(table: np.ndarray) -> str:
    """The WeightLevels whose table ``table`` is, or ``custom``."""
    bits = math.ceil(math.log2(table.size + 1))
    for levels in WeightLevels:
        candidate = level_table(levels, bits)
        if candidate.shape == table.shape and np.array_equal(candidate, table.astype(np.float32)):
            return levels.value
    return "custom"


def _lut_row(tensor: str, consumer: str, alpha: np.ndarray, table: np.ndarray) -> dict:
    """The row of lookup-table weights: its levels (named when a known table) and alpha's range
    in the scale fields; zero points do not apply."""
    per_channel = alpha.size > 1
    return {
        "tensor": tensor,
        "role": "weight",
        "consumer": consumer,
        "bits": math.ceil(math.log2(table.size + 1)),
        "signed": True,
        "granularity": f"per_channel(axis={int(np.argmax(alpha.shape))})" if per_channel else "per_tensor",
        "scale_min": float(alpha.min()),
        "scale_max": float(alpha.max()),
        "zero_points_all_zero": None,
        "levels": _table_name(table),
        "table": [float(level) for level in table],
    }


def _decoded_lut(node: ir.Node) -> tuple[ir.Value, ir.Value, ir.Value] | None:
    """(codes, alpha, table) when ``node`` is the Mul of an emitted lookup table,
    Mul(Gather(table, Cast(codes)), alpha) with constant codes, table and alpha; else None."""
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return None
    gather, alpha = node.inputs[0].producer(), node.inputs[1]
    if gather is None or gather.op_type != "Gather" or alpha.const_value is None or gather.inputs[0].const_value is None:
        return None
    cast = gather.inputs[1].producer()
    if cast is None or cast.op_type != "Cast" or cast.inputs[0].const_value is None:
        return None
    return cast.inputs[0], alpha, gather.inputs[0]


def lookup_table_storage(model: ir.Model) -> dict[str, int]:
    """How many weights an emitted model stores as lookup-table codes, and the bytes their codes,
    tables and alphas take in the file."""
    decoded = [found for found in map(_decoded_lut, model.graph) if found is not None]
    stored = {value.name: value for found in decoded for value in found}
    return {"layers": len(decoded), "bytes": sum(ir.serde.serialize_tensor(value.const_value).ByteSize() for value in stored.values())}


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
        decoded = _decoded_lut(node)
        if registry.kind_of(node) is LUT:
            alpha, table = (registry.input_for(node, role).const_value.numpy() for role in (Role.SCALE, Role.LEVEL_TABLE))
            rows.append(_lut_row(registry.input_for(node, Role.SOURCE).name, consumer, alpha, table))
        elif decoded is not None:
            codes, alpha, table = decoded
            rows.append(_lut_row(codes.name.removesuffix(".codes"), consumer, alpha.const_value.numpy(), table.const_value.numpy()))
        elif registry.kind_of(node) is not None:
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
    lines.append(f"{'role':<10} {'bits':>4} {'type':<6} {'levels':<8} {'granularity':<20} {'scale (alpha) range':<23} tensor")
    tables: dict[str, list[float]] = {}
    for row in result["quantizers"]:
        kind = "int" if row["signed"] else "uint"
        scales = f"{row['scale_min']:.3g}..{row['scale_max']:.3g}" if row["scale_min"] is not None else "computed in graph"
        lines.append(f"{row['role']:<10} {row['bits']:>4} {kind:<6} {row['levels']:<8} {row['granularity']:<20} {scales}".ljust(75) + f" {row['tensor']}")
        if row["table"] is not None:
            tables.setdefault(f"{row['levels']} {row['bits']}-bit", row["table"])
    for name, table in tables.items():
        lines.append(f"table {name} (x alpha): " + ", ".join(f"{level:.4g}" for level in table))
    return "\n".join(lines)
