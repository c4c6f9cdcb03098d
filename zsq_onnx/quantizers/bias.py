"""The bias quantizer: a Conv/Gemm bias on the int32 levels that integer kernels hold.

``BiasQuantize(bias, input_scale, weight_scale)``: int32 levels with scale
input_scale * weight_scale (per output channel) and zero point 0, as integer kernels (ORT's
QLinearConv, TensorRT) hold biases; ORT applies exactly this to float biases next to QDQ, so the
graph states it to keep ORT and the torch simulation bit-exact. Both scales belong to the layer's
input and weight quantizers: this one reads them and trains neither.
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
def BiasQuantize(bias, input_scale, weight_scale):
    """Bias rounded to int32 levels of input_scale * weight_scale (QuantizeLinear has no int32)."""
    scale = op.Mul(input_scale, weight_scale)
    levels = op.Cast(op.Round(op.Div(bias, scale)), to=onnx.TensorProto.INT32)
    return op.DequantizeLinear(levels, scale, axis=0)


def _bias_quantize(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    bias, input_scale, weight_scale = inputs
    scale = input_scale * weight_scale
    return round_ste(bias / scale) * scale


BIAS = register(QuantizerKind("BiasQuantize", BiasQuantize, _bias_quantize, (
    InputRole("bias", Role.SOURCE, trainable=True),
    InputRole("input_scale", Role.INPUT_SCALE),
    InputRole("weight_scale", Role.WEIGHT_SCALE),
)))
