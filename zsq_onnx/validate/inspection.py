"""What quantizers a model holds: per tensor, its kind, bits, granularity and scale range."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from zsq_onnx import quantizers
from zsq_onnx.io.onnx_io import readers

_TYPE_RANGES = {**quantizers.INTEGER_RANGES, onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


def _quantizer_row(tensor: str, role: str, consumer: str, scale: np.ndarray, zero_point: onnx.TensorProto, qrange: tuple[int, int], axis: int) -> dict:
    qmin, qmax = qrange
    zero = numpy_helper.to_array(zero_point).astype(np.int64)
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


def quantizer_table(model: onnx.ModelProto) -> list[dict]:
    """One row per quantizer, for emitted QDQ models and for intermediate models with zsq nodes."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = readers(model)
    rows = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axis = attrs.get("axis", 1)
        consumer = ", ".join(f"{r.op_type} {r.name}" for r in consumers.get(node.output[0], []))
        if node.domain == quantizers.DOMAIN:
            zero_point = inits[node.input[2]]
            qrange = (int(numpy_helper.to_array(inits[node.input[3]])), int(numpy_helper.to_array(inits[node.input[4]]))) if len(node.input) > 4 else _TYPE_RANGES[zero_point.data_type]
            role = "weight" if node.input[0] in inits else "activation"
            rows.append(_quantizer_row(node.input[0], role, consumer, numpy_helper.to_array(inits[node.input[1]]), zero_point, qrange, axis))
        elif node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            zero_point = inits[node.input[2]]
            qrange = _TYPE_RANGES.get(zero_point.data_type, (0, 255))
            source = node.input[0]
            clip = producers.get(source)
            if clip is not None and clip.op_type == "Clip" and all(name in inits for name in clip.input[1:3]):
                qrange = tuple(int(numpy_helper.to_array(inits[name])) for name in clip.input[1:3])
                source = clip.input[0]
            if source in inits:
                role, tensor = "weight", source
                qrange = _stored_range(numpy_helper.to_array(inits[source]).astype(np.int64), qrange)
            else:
                quantize = producers.get(source)
                role, tensor = "activation", quantize.input[0] if quantize is not None else source
            rows.append(_quantizer_row(tensor, role, consumer, numpy_helper.to_array(inits[node.input[1]]), zero_point, qrange, axis))
    return rows


def inspect_model(model: onnx.ModelProto) -> dict:
    """Quantizer table, op counts and size of a model."""
    return {
        "size_bytes": model.ByteSize(),
        "ops": dict(Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node).most_common()),
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
