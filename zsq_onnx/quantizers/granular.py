"""The granular quantizer (GranQ): no stored parameters besides the level count.

``GranularQuantize(x, levels)``: for every sample and channel, min and max over the remaining
(spatial) axes, widened to include 0; step = max(max - min, 1e-8) / levels, zero point
round(-min / step); one per-axis QuantizeLinear/Clip/DequantizeLinear on the [N*C, H*W] view.
That is GranQ's per-(sample, channel) asymmetric quantizer in the standard zero-point form:
identical to GranQ's x - min form whenever a channel's min is <= 0 (after ReLU, nearly always),
and zero stays exact. One vectorized body for every N, C and spatial size (README compares it
with the other forms tried).
"""

from __future__ import annotations

import logging
from typing import Any

import onnx
from onnxscript import opset21 as op
from onnxscript import script

from zsq_onnx.quantizers.common import round_ste, zsq
from zsq_onnx.quantizers.registry import InputRole, NodeInputs, QuantizerKind, Role, register

logger = logging.getLogger(__name__)


@script(zsq, default_opset=op)
def GranularQuantize(x, levels):
    """GranQ: asymmetric fake quantization with a range per sample and channel."""
    rows = op.Flatten(x, axis=2)
    spatial = op.Constant(value_ints=[1])
    zero = op.Constant(value_float=0.0)
    low = op.Min(op.ReduceMin(rows, spatial, keepdims=0), zero)
    high = op.Max(op.ReduceMax(rows, spatial, keepdims=0), zero)
    step = op.Div(op.Max(op.Sub(high, low), op.Constant(value_float=1e-8)), levels)
    zero_point = op.Cast(op.Round(op.Div(op.Neg(low), step)), to=onnx.TensorProto.UINT8)
    q = op.QuantizeLinear(rows, step, zero_point, axis=0)
    clipped = op.Clip(q, op.Cast(zero, to=onnx.TensorProto.UINT8), op.Cast(levels, to=onnx.TensorProto.UINT8))
    return op.Reshape(op.DequantizeLinear(clipped, step, zero_point, axis=0), op.Shape(x))


def granular_quantize(x, levels):
    """Torch GranQ matching GranularQuantize: per (sample, channel) range over the other axes,
    widened to include 0, with straight-through rounding (gradients also reach the range)."""
    import torch

    grouped = x.reshape(x.shape[0], x.shape[1], -1)
    low = grouped.amin(dim=2, keepdim=True).clamp(max=0)
    high = grouped.amax(dim=2, keepdim=True).clamp(min=0)
    step = torch.clamp(high - low, min=1e-8) / levels
    zero_point = torch.round(-low / step).detach()
    q = torch.clamp(round_ste(grouped / step) + zero_point, 0, levels)
    return ((q - zero_point) * step).reshape(x.shape)


def _granular_quantize(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    x, levels = inputs
    return granular_quantize(x, levels)


GRANULAR = register(QuantizerKind("GranularQuantize", GranularQuantize, _granular_quantize, (InputRole("x", Role.SOURCE), InputRole("levels", Role.LEVELS))))
