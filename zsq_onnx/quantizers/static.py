"""The static quantizer: scale and zero point are initializers set by calibration (classic QDQ).

Two ops, one per integer range, as two registered kinds:
  ``StaticQuantize(x, scale, zero_point)``: QuantizeLinear -> DequantizeLinear, the integer
  range is the zero point's full type range (int8, uint8, int4, uint4);
  ``StaticQuantizeClip(x, scale, zero_point, qmin, qmax)``: the same with a Clip to
  [qmin, qmax] in between, for bit widths held in an 8-bit container (2, 3, 5, 6, 7 bits).
They are two kinds rather than one because each op type has its own inputs and ONNX body; both
are ``calibrated_static``, which is what passes ask about. :func:`kind_for_range` picks one.
The torch implementations scale the scale's gradient as LSQ does (per sample for activations).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript import opset21 as op
from onnxscript import script

from zsq_onnx.quantizers.common import INTEGER_RANGES, fake_quantize, learned_scale, zsq
from zsq_onnx.quantizers.params import on_grid
from zsq_onnx.quantizers.registry import InputRole, NodeInputs, QuantizerKind, Role, input_for, integer_range, register

logger = logging.getLogger(__name__)


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


def _static_quantize(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    """Torch StaticQuantize: the levels are the zero point type's range."""
    x, scale, zero_point = inputs
    qmin, qmax = INTEGER_RANGES[node.types[2]]
    return fake_quantize(x, learned_scale(x, scale, qmax, per_sample=not node.constant[0]), zero_point, qmin, qmax, attrs.get("axis", 1))


def _static_quantize_clip(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    """Torch StaticQuantizeClip: the levels are [qmin, qmax]."""
    x, scale, zero_point, qmin, qmax = inputs
    return fake_quantize(x, learned_scale(x, scale, int(qmax), per_sample=not node.constant[0]), zero_point, int(qmin), int(qmax), attrs.get("axis", 1))


def _dequantized_constant(node: ir.Node) -> np.ndarray:
    """The output of a static quantizer of constants in numpy, as QuantizeLinear -> (Clip) ->
    DequantizeLinear compute it (round half to even)."""
    source, scale, zero_point = (input_for(node, role).const_value.numpy() for role in (Role.SOURCE, Role.SCALE, Role.ZERO_POINT))
    qmin, qmax = integer_range(node)
    shape = [1] * source.ndim
    if np.size(scale) > 1:
        shape[node.attributes.get_int("axis", 1)] = -1
    scale = np.asarray(scale, np.float32).reshape(shape)
    zero_point = np.asarray(zero_point).astype(np.int64).reshape(shape)
    return on_grid(source.astype(np.float32), scale, zero_point, qmin, qmax).astype(np.float32)


_INPUTS = (InputRole("x", Role.SOURCE, trainable=True), InputRole("scale", Role.SCALE, trainable=True), InputRole("zero_point", Role.ZERO_POINT))

STATIC = register(QuantizerKind("StaticQuantize", StaticQuantize, _static_quantize, _INPUTS, calibrated_static=True, constant_output=_dequantized_constant))
STATIC_CLIP = register(QuantizerKind(
    "StaticQuantizeClip", StaticQuantizeClip, _static_quantize_clip, (*_INPUTS, InputRole("qmin", Role.QMIN), InputRole("qmax", Role.QMAX)), calibrated_static=True,
    constant_output=_dequantized_constant,
))


def kind_for_range(qmin: int, qmax: int, container: int) -> QuantizerKind:
    """StaticQuantize when [qmin, qmax] is the ``container`` type's full range, else StaticQuantizeClip."""
    return STATIC if (qmin, qmax) == INTEGER_RANGES[container] else STATIC_CLIP
