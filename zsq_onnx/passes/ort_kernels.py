"""Which weighted layers ONNX Runtime CPU fuses into integer kernels, and which of those
saturate on x86 CPUs without VNNI."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx.quantizers.common import INTEGER_RANGES

INT16_MAX = 32767
QDQ_PROPAGATING_OPS = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _constant_per_tensor(node: ir.Node | None, op_type: str) -> bool:
    """Whether ``node`` is an ``op_type`` (Q or DQ) with a constant per-tensor scale."""
    if node is None or node.op_type != op_type:
        return False
    scale = node.inputs[1]
    return scale is not None and scale.const_value is not None and scale.const_value.size == 1


def integer_kernel(node: ir.Node) -> bool:
    """Whether ORT CPU can fuse ``node`` into QLinearConv/QGemm/MatMulIntegerToFloat: its input
    is dequantized with a constant per-tensor scale and, for Conv, its output (through a Relu) is
    quantized so too (Gemm and MatMul have integer kernels with float outputs)."""
    if not _constant_per_tensor(node.inputs[0].producer() if node.inputs[0] is not None else None, "DequantizeLinear"):
        return False
    if node.op_type != "Conv":
        return True
    output = node.outputs[0]
    users = [user for user, _ in output.uses()]
    activation = users[0] if len(users) == 1 and users[0].op_type in ("Relu", "Clip") else None
    if activation is not None:
        users = [user for user, _ in activation.outputs[0].uses()]
    users = [_past_propagating_ops(user) for user in users]
    if not users or not all(_constant_per_tensor(user, "QuantizeLinear") for user in users):
        return False
    return activation is None or activation.op_type == "Relu" or all(_clip_redundant(activation, user) for user in users)


def _past_propagating_ops(node: ir.Node) -> ir.Node | None:
    """The first node after a chain of single-reader ops that ORT moves a QuantizeLinear back
    across (its QDQ propagation: MaxPool, Reshape, Transpose, ...), ``node`` itself when it is
    none of them: a Conv whose output reaches a quantizer through a MaxPool fuses too."""
    while node is not None and node.op_type in QDQ_PROPAGATING_OPS:
        readers = [user for user, _ in node.outputs[0].uses()]
        node = readers[0] if len(readers) == 1 else None
    return node


def _clip_redundant(clip: ir.Node, quantize: ir.Node) -> bool:
    """Whether ``quantize``'s representable range lies within ``clip``'s bounds, so that ORT
    drops the Clip (ReLU6) and fuses the Conv before it (its ClipQuantFusion)."""
    bounds = [v.const_value.numpy().item() if v is not None and v.const_value is not None else None for v in (*clip.inputs[1:3], None, None)[:2]]
    zero_point = quantize.inputs[2] if len(quantize.inputs) > 2 else None
    if zero_point is None or zero_point.const_value is None or zero_point.type is None:
        return False
    scale = float(quantize.inputs[1].const_value.numpy().item())
    zero = int(zero_point.const_value.numpy().item())
    if zero_point.type.dtype not in (ir.DataType.UINT8, ir.DataType.INT8):  # ORT's integer kernels are 8-bit
        return False
    low, high = INTEGER_RANGES[int(zero_point.type.dtype)]
    lower_ok = bounds[0] is None or (low - zero) * scale >= bounds[0] - 1e-6 * abs(bounds[0])
    upper_ok = bounds[1] is None or (high - zero) * scale <= bounds[1] + 1e-6 * abs(bounds[1])
    return lower_ok and upper_ok


def integer_span(value: ir.Value | None) -> int:
    """The largest magnitude of the integers dequantized into ``value``: a constant's own values,
    else the Clip bounds of a narrow quantizer, else its container's range (0 when ``value`` is
    not dequantized)."""
    dequantize = value.producer() if value is not None else None
    source = dequantize.inputs[0] if dequantize is not None and dequantize.op_type == "DequantizeLinear" else None
    if source is None:
        return 0
    if source.const_value is not None:
        return int(np.abs(source.const_value.numpy().astype(np.int64)).max(initial=0))
    clip = source.producer()
    if clip is not None and clip.op_type == "Clip" and all(v is not None and v.const_value is not None for v in clip.inputs[1:3]):
        return max(abs(int(v.const_value.numpy())) for v in clip.inputs[1:3])
    return (1 << source.type.dtype.bitwidth) - 1 if source.type is not None else 255


def saturating_kernel(node: ir.Node) -> bool:
    """Whether ORT CPU fuses ``node`` into an integer kernel whose u8 x s8 pair sums can pass the
    int16 range on x86 CPUs without VNNI (vpmaddubsw saturates; results then differ from the QDQ
    graph): 2 x activation span x weight span > 32767, as with full-range int8 weights beside
    8-bit activations. u8 x u8 kernels widen to 16 bits first and do not saturate."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    dequantize = weight.producer() if weight is not None else None
    signed = dequantize is not None and dequantize.inputs[0].type is not None and dequantize.inputs[0].type.dtype == ir.DataType.INT8
    return signed and integer_kernel(node) and 2 * integer_span(node.inputs[0]) * integer_span(weight) > INT16_MAX
