"""The zsq quantizer functions: ONNX bodies (onnxscript) and torch implementations side by side.

Each quantizer is a node of domain ``zsq`` whose model-local function body is standard ONNX, so
ONNX Runtime runs the intermediate model as it is; TorchGraph runs the torch implementation
below instead (straight-through rounding), and emission inlines the bodies.

static quantizers (parameters are initializers so they can be trained):
  ``StaticQuantize(x, scale, zero_point)``: QuantizeLinear -> DequantizeLinear, the integer
  range is the zero point's full type range (int8, uint8, int4, uint4);
  ``StaticQuantizeClip(x, scale, zero_point, qmin, qmax)``: the same with a Clip to
  [qmin, qmax] in between, for bit widths held in an 8-bit container (2, 3, 5, 6, 7 bits).

bias quantizer: ``BiasQuantize(bias, input_scale, weight_scale)``: int32 levels with scale
  input_scale * weight_scale (per output channel) and zero point 0, as integer kernels (ORT's
  QLinearConv, TensorRT) hold biases; ORT applies exactly this to float biases next to QDQ, so
  the graph states it to keep ORT and the torch simulation bit-exact.
"""

from __future__ import annotations

import functools
from typing import Any

import onnx
from onnxscript import opset21 as op
from onnxscript import script
from onnxscript.values import Opset

DOMAIN = "zsq"
VERSION = 1
zsq = Opset(DOMAIN, VERSION)


@script(zsq, default_opset=op)
def StaticQuantize(x, scale, zero_point, axis: int = 1):
    """Uniform affine fake quantization over the zero point's full integer range."""
    q = op.QuantizeLinear(x, scale, zero_point, axis=axis)
    return op.DequantizeLinear(q, scale, zero_point, axis=axis)


@script(zsq, default_opset=op)
def StaticQuantizeClip(x, scale, zero_point, qmin, qmax, axis: int = 1):
    """Uniform affine fake quantization clipped to [qmin, qmax] inside an 8-bit container."""
    q = op.QuantizeLinear(x, scale, zero_point, axis=axis)
    clipped = op.Clip(q, qmin, qmax)
    return op.DequantizeLinear(clipped, scale, zero_point, axis=axis)


@script(zsq, default_opset=op)
def BiasQuantize(bias, input_scale, weight_scale):
    """Bias rounded to int32 levels of input_scale * weight_scale (QuantizeLinear has no int32)."""
    scale = op.Mul(input_scale, weight_scale)
    levels = op.Cast(op.Round(op.Div(bias, scale)), to=onnx.TensorProto.INT32)
    return op.DequantizeLinear(levels, scale, axis=0)


@functools.cache
def function_protos() -> dict[str, onnx.FunctionProto]:
    """The FunctionProto of every zsq quantizer, by op type (built once; do not mutate)."""
    return {fn.name: fn.to_function_proto() for fn in (StaticQuantize, StaticQuantizeClip, BiasQuantize)}


INTEGER_RANGES: dict[int, tuple[int, int]] = {
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT4: (-8, 7),
    onnx.TensorProto.UINT4: (0, 15),
}


def container_type(bits: int, signed: bool) -> int:
    """The ONNX integer type that holds ``bits``-bit levels: int4/uint4 for 4 bits, else 8-bit."""
    if bits == 4:
        return onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4
    return onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8


def round_ste(x):
    """Round half to even (as QuantizeLinear does) with a straight-through gradient."""
    return x + (x.round() - x).detach()


def _broadcast_on_axis(param, ndim: int, axis: int):
    if param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return param.reshape(shape)


def fake_quantize(x, scale, zero_point, qmin: int, qmax: int, axis: int = 1):
    """Torch fake quantization matching QuantizeLinear->Clip->DequantizeLinear, STE rounding."""
    import torch

    scale = _broadcast_on_axis(scale, x.ndim, axis)
    zero_point = _broadcast_on_axis(zero_point.to(x.dtype), x.ndim, axis)
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _static_quantize(inputs: list, attrs: dict[str, Any]):
    x, scale, zero_point = inputs
    qmin, qmax = INTEGER_RANGES[attrs["_input_types"][2]]
    return fake_quantize(x, scale, zero_point, qmin, qmax, attrs.get("axis", 1))


def _static_quantize_clip(inputs: list, attrs: dict[str, Any]):
    x, scale, zero_point, qmin, qmax = inputs
    return fake_quantize(x, scale, zero_point, int(qmin), int(qmax), attrs.get("axis", 1))


def _bias_quantize(inputs: list, attrs: dict[str, Any]):
    bias, input_scale, weight_scale = inputs
    scale = input_scale * weight_scale
    return round_ste(bias / scale) * scale


TORCH_OPS = {"StaticQuantize": _static_quantize, "StaticQuantizeClip": _static_quantize_clip, "BiasQuantize": _bias_quantize}
