"""What quantizers a model holds: per tensor, its kind, bits, granularity and scale range."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from zsq_onnx import quantizers

_TYPE_RANGES = {**quantizers.INTEGER_RANGES, onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


def _quantizer_row(tensor: str, role: str, consumer: str, scale: np.ndarray, zero_point: ir.TensorProtocol, qrange: tuple[int, int], axis: int) -> dict:
    qmin, qmax = qrange
    zero = zero_point.numpy().astype(np.int64)
    return {
        "tensor": tensor,
        "role": role,
        "consumer": consumer,
        "bits": int(math.log2(qmax - qmin + 1)),
        "signed": qmin < 0,
        "granularity": "per_tensor" if scale.ndim == 0 or scale.size == 1 else f"per_channel(axis={axis})",
        "scale_min": float(scale.min()),
        "scale_max": float(scale.max()),
        "zero_points_all_zero": bool((zero == 0).all()),
    }


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
    """One row per quantizer, for emitted QDQ models and for intermediate models with zsq nodes."""
    rows = []
    for node in model.graph:
        axis = node.attributes.get_int("axis", 1)
        consumer = ", ".join(f"{r.op_type} {r.name}" for r in node.outputs[0].consumers())
        inputs = node.inputs
        if node.domain == quantizers.DOMAIN:
            zero_point = inputs[2].const_value
            qrange = (int(inputs[3].const_value.numpy()), int(inputs[4].const_value.numpy())) if len(inputs) > 4 else _TYPE_RANGES[int(zero_point.dtype)]
            role = "weight" if inputs[0].const_value is not None else "activation"
            rows.append(_quantizer_row(inputs[0].name, role, consumer, inputs[1].const_value.numpy(), zero_point, qrange, axis))
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
        lines.append(f"{row['role']:<10} {row['bits']:>4} {kind:<6} {row['granularity']:<20} {row['scale_min']:.3g}..{row['scale_max']:.3g}".ljust(66) + f" {row['tensor']}")
    return "\n".join(lines)
