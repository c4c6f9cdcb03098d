"""The lookup-table weight quantizer: non-uniform levels (ASQ's POST, powers of two) as k-bit
codes into a small table, times a learned alpha per output channel.

``LutWeightQuantize(w, alpha, table)``: ``table`` holds the 2^k - 1 sorted levels in units of
alpha ({0, +-(sqrt 2)^-i} for POST, i = 0 .. 2^(k-1) - 2); ``alpha`` has the weight's rank with
the channel axis (or nothing) longer than 1. The code of a weight is the number of midpoints
between neighbouring levels that w / alpha exceeds, so it takes its nearest level (ties to the
lower one), and values beyond +-alpha take the end levels; the output is table[code] * alpha.
The ONNX body, the torch implementation and :func:`codes` compute the same float32 divisions
and comparisons, so ORT, TorchGraph and the emitted codes agree exactly.

Emission (:class:`~zsq_onnx.passes.lut_weights.LutWeightsPass`) stores the codes as uint4 (at
most 16 levels) or uint8 and reads them with Cast -> Gather(table) -> Mul(alpha): QDQ cannot say
non-uniform levels, so these layers run float kernels on weights ORT decodes once at load.
Torch side: the nearest level with a straight-through estimator for w (inside +-alpha), and
alpha's gradient as LSQ's (table level minus w / alpha inside, the end level outside), scaled.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript import opset21 as op
from onnxscript import script

from zsq_onnx.options import WeightLevels
from zsq_onnx.quantizers.common import lsq_gradient_scale, scale_gradient, zsq
from zsq_onnx.quantizers.registry import InputRole, NodeInputs, QuantizerKind, Role, input_for, register

logger = logging.getLogger(__name__)

ALPHA_PERCENTILE = 99.0
"""The percentile of |w| (per channel) that alpha starts at, clipping rare large weights as ASQ does."""


def level_table(levels: WeightLevels, bits: int) -> np.ndarray:
    """The sorted float32 levels of a ``bits``-bit table in units of alpha: zero and 2^(bits-1) - 1
    magnitudes each side, so 2^bits - 1 levels that fit ``bits``-bit codes. POST: (sqrt 2)^-i;
    powers of two: 2^-i; uniform: i / (2^(bits-1) - 1)."""
    count = (1 << (bits - 1)) - 1
    steps = np.arange(count, dtype=np.float64)
    if levels == WeightLevels.POST:
        magnitudes = 2.0 ** (-steps / 2)
    elif levels == WeightLevels.POT:
        magnitudes = 2.0 ** (-steps)
    else:
        magnitudes = (count - steps) / count
    return np.concatenate([-magnitudes, [0.0], magnitudes[::-1]]).astype(np.float32)


def thresholds(table: np.ndarray) -> np.ndarray:
    """The midpoints between neighbouring levels, in float32 as the ONNX body computes them."""
    table = np.asarray(table, np.float32)
    return ((table[1:] + table[:-1]) * np.float32(0.5)).astype(np.float32)


def codes(weight: np.ndarray, alpha: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each weight's index into ``table``: how many midpoints w / alpha exceeds (its nearest
    level; ties to the lower one)."""
    normalized = np.asarray(weight, np.float32) / np.asarray(alpha, np.float32)
    return np.searchsorted(thresholds(table), normalized, side="left")


def initial_alpha(weight: np.ndarray, axis: int | None, percentile: float = ALPHA_PERCENTILE) -> np.ndarray:
    """Alpha before training: the ``percentile`` of |w| over each channel along ``axis`` (over the
    whole tensor when None), shaped to broadcast against the weight; 1 where that is 0."""
    magnitude = np.abs(np.asarray(weight, np.float32))
    if axis is None:
        alpha = np.percentile(magnitude, percentile, keepdims=True)
    else:
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        alpha = np.percentile(magnitude, percentile, axis=reduce, keepdims=True)
    return np.where(alpha > 0, alpha, 1.0).astype(np.float32)


@script(zsq, default_opset=op)
def LutWeightQuantize(w, alpha, table):
    """Lookup-table fake quantization: the nearest level of w / alpha in ``table``, times alpha."""
    low = op.Slice(table, op.Constant(value_ints=[0]), op.Constant(value_ints=[-1]))
    high = op.Slice(table, op.Constant(value_ints=[1]), op.Constant(value_ints=[9223372036854775807]))
    midpoints = op.Mul(op.Add(low, high), op.Constant(value_float=0.5))
    normalized = op.Unsqueeze(op.Div(w, alpha), op.Constant(value_ints=[-1]))
    above = op.Cast(op.Greater(normalized, midpoints), to=onnx.TensorProto.INT64)
    code = op.ReduceSum(above, op.Constant(value_ints=[-1]), keepdims=0)
    return op.Mul(op.Gather(table, code), alpha)


def lut_quantize(w, alpha, table):
    """Torch LutWeightQuantize: the nearest level with a straight-through gradient for ``w``
    inside +-alpha; alpha's gradient is the level minus w / alpha there, the end level outside."""
    import torch

    normalized = w / alpha
    midpoints = (table[1:] + table[:-1]) * 0.5
    level = table[torch.bucketize(normalized.detach(), midpoints, right=False)]
    clipped = torch.clamp(normalized, table[0], table[-1])
    return (level + (clipped - clipped.detach())) * alpha


def _lut_quantize(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    w, alpha, table = inputs
    if alpha.requires_grad:
        alpha = scale_gradient(alpha, lsq_gradient_scale(w, alpha, table.numel() // 2, per_sample=False))
    return lut_quantize(w, alpha, table)


def _dequantized_constant(node: ir.Node) -> np.ndarray:
    """The output of a lookup-table quantizer of constants in numpy, as its ONNX body computes it."""
    weight, alpha, table = (input_for(node, role).const_value.numpy() for role in (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE))
    return (np.asarray(table, np.float32)[codes(weight, alpha, table)] * np.asarray(alpha, np.float32)).astype(np.float32)


LUT = register(QuantizerKind(
    "LutWeightQuantize", LutWeightQuantize, _lut_quantize,
    (InputRole("w", Role.SOURCE, trainable=True), InputRole("alpha", Role.SCALE, trainable=True), InputRole("table", Role.LEVEL_TABLE)),
    constant_output=_dequantized_constant,
))
