"""What every quantizer kind shares: the ``zsq`` opset, integer ranges, and the torch helpers
(straight-through rounding, LSQ gradient scaling, fake quantization).

Torch is imported inside the functions that need it, so this module imports without torch.
"""

from __future__ import annotations

import logging
import math

import onnx
from onnxscript.values import Opset

logger = logging.getLogger(__name__)

DOMAIN = "zsq"
VERSION = 1
zsq = Opset(DOMAIN, VERSION)

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


def scale_gradient(value, factor: float):
    """``value`` in the forward pass, its gradient multiplied by ``factor`` in the backward pass."""
    scaled = value * factor
    return scaled + (value - scaled).detach()


def lsq_gradient_scale(x, scale, qmax: int, per_sample: bool) -> float:
    """LSQ's step-size gradient scale 1/sqrt(N * Qp): N elements per scale value (per sample
    for activations, whose first axis is the batch)."""
    covered = x[0] if per_sample else x
    elements = max(covered.numel() // max(scale.numel(), 1), 1)
    return 1.0 / math.sqrt(elements * max(qmax, 1))


def learned_scale(x, scale, qmax: int, per_sample: bool):
    """``scale`` with LSQ's gradient scale when it is trained (``requires_grad``), else as it is."""
    if not scale.requires_grad:
        return scale
    return scale_gradient(scale, lsq_gradient_scale(x, scale, qmax, per_sample=per_sample))


def fake_quantize(x, scale, zero_point, qmin: int, qmax: int, axis: int = 1):
    """Torch fake quantization matching QuantizeLinear->Clip->DequantizeLinear: as LSQ,
    round(clip(x/s, qmin - z, qmax - z)) * s with straight-through rounding, so the scale's
    gradient is round(x/s) - x/s inside the range and the bound outside (equal values: the zero
    point and the bounds are integers)."""
    import torch

    scale = _broadcast_on_axis(scale, x.ndim, axis)
    zero_point = _broadcast_on_axis(zero_point.to(x.dtype), x.ndim, axis)
    return round_ste(torch.clamp(x / scale, qmin - zero_point, qmax - zero_point)) * scale
