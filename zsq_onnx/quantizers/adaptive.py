"""The adaptive quantizer (ASQ), for fine-tuning.

``AdaptiveQuantize(x, scale, zero_point, qmin, qmax, down_weight, down_bias, up_weight, up_bias)``:
an adapter GlobalAveragePool -> Gemm(C -> C/4) -> Relu -> Gemm(-> 1) -> Relu gives beta per
sample; the step used is scale * beta (floored at 1e-4 * scale), applied with a per-axis
QuantizeLinear/Clip/DequantizeLinear on the batch axis. Initialised with beta = 1 it is the
static quantizer; fine-tuning trains the adapter and the scale (LSQ-scaled gradient) together.
"""

from __future__ import annotations

import logging
from typing import Any

from onnxscript import opset21 as op
from onnxscript import script

from zsq_onnx.quantizers.common import fake_quantize, learned_scale, zsq
from zsq_onnx.quantizers.registry import InputRole, NodeInputs, QuantizerKind, Role, register

logger = logging.getLogger(__name__)


@script(zsq, default_opset=op)
def AdaptiveQuantize(x, scale, zero_point, qmin, qmax, down_weight, down_bias, up_weight, up_bias):
    """ASQ: static fake quantization whose step is scaled per sample by a small adapter."""
    pooled = op.Flatten(op.GlobalAveragePool(x))
    hidden = op.Relu(op.Gemm(pooled, down_weight, down_bias, transB=1))
    beta = op.Relu(op.Gemm(hidden, up_weight, up_bias, transB=1))
    step = op.Mul(scale, op.Max(op.Reshape(beta, op.Constant(value_ints=[-1])), op.Constant(value_float=1e-4)))
    zero_points = op.Expand(zero_point, op.Shape(step))
    q = op.Clip(op.QuantizeLinear(x, step, zero_points, axis=0), qmin, qmax)
    return op.DequantizeLinear(q, step, zero_points, axis=0)


def adaptive_quantize(x, scale, zero_point, qmin: int, qmax: int, down_weight, down_bias, up_weight, up_bias):
    """Torch ASQ matching AdaptiveQuantize: beta per sample from the adapter, step = scale * beta."""
    import torch

    pooled = x.mean(dim=tuple(range(2, x.ndim)))
    hidden = torch.relu(pooled @ down_weight.T + down_bias)
    beta = torch.relu(hidden @ up_weight.T + up_bias).reshape(-1)
    step = scale * torch.clamp(beta, min=1e-4)
    return fake_quantize(x, step, zero_point.expand(step.shape), qmin, qmax, axis=0)


def _adaptive_quantize(inputs: list, attrs: dict[str, Any], node: NodeInputs):
    x, scale, zero_point, qmin, qmax, *adapter = inputs
    return adaptive_quantize(x, learned_scale(x, scale, int(qmax), per_sample=not node.constant[0]), zero_point, int(qmin), int(qmax), *adapter)


ADAPTIVE = register(QuantizerKind("AdaptiveQuantize", AdaptiveQuantize, _adaptive_quantize, (
    InputRole("x", Role.SOURCE, trainable=True),
    InputRole("scale", Role.SCALE, trainable=True),
    InputRole("zero_point", Role.ZERO_POINT),
    InputRole("qmin", Role.QMIN),
    InputRole("qmax", Role.QMAX),
    *(InputRole(name, Role.ADAPTER, trainable=True) for name in ("down_weight", "down_bias", "up_weight", "up_bias")),
)))
