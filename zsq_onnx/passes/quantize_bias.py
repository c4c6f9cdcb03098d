"""Quantize the float bias of Conv/Gemm whose input and weight are quantized: int32 levels of
input_scale * weight_scale, as integer kernels hold it (and as ORT would do on its own)."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions
from zsq_onnx.quantizers.bias import BIAS
from zsq_onnx.quantizers.registry import Role, input_for, is_calibrated_static

BIAS_LEVELS = float(1 << 30)  # int32 with headroom for the accumulated products

logger = logging.getLogger(__name__)


def _static_scale(value: ir.Value | None) -> ir.Value | None:
    """The scale initializer of the zsq static quantizer that produces ``value``, if any."""
    producer = value.producer() if value is not None else None
    if not is_calibrated_static(producer):
        return None
    return input_for(producer, Role.SCALE)


def fit_weight_scale(bias: ir.Value, input_scale: ir.Value, weight_scale: ir.Value) -> bool:
    """Raise the weight scale of channels whose bias would overflow int32 levels of
    input_scale * weight_scale: a channel whose folded weights are almost zero (a BatchNorm with
    tiny gamma) has a tiny weight scale but keeps its bias, and an overflowing int32 cast loses
    that bias. Its weights, at most the old scale's range, still fit the coarser scale.
    Returns whether a scale changed."""
    scale = weight_scale.const_value.numpy().astype(np.float32)
    needed = np.abs(bias.const_value.numpy()).astype(np.float32) / (np.float32(input_scale.const_value.numpy().item()) * np.float32(BIAS_LEVELS))
    if scale.size == 1:
        needed = needed.max(initial=0.0)
    fitted = np.maximum(scale, needed).astype(np.float32)
    if np.array_equal(fitted, scale):
        return False
    logger.debug("bias %s: weight scale raised on %d channels so int32 levels hold the bias", bias.name, int(np.sum(fitted != scale)))
    weight_scale.const_value = ir.tensor(fitted.reshape(scale.shape), name=weight_scale.name)
    return True


class QuantizeBiasPass(ir.passes.InPlacePass):
    """Insert zsq.BiasQuantize on each Conv/Gemm bias whose activation scale is per-tensor and
    whose weight scale matches the bias length (per output channel or per tensor), raising
    weight scales where the bias would not fit int32 levels (see :func:`fit_weight_scale`)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
                continue
            bias = node.inputs[2]
            input_scale, weight_scale = _static_scale(node.inputs[0]), _static_scale(node.inputs[1])
            if bias.const_value is None or input_scale is None or weight_scale is None:
                continue
            if input_scale.const_value.size != 1 or weight_scale.const_value.size not in (1, bias.const_value.size):
                continue
            fit_weight_scale(bias, input_scale, weight_scale)
            ensure_quantizer_functions(model)
            # a bias shared by several layers (exporters merge equal initializers) gets one quantizer per layer
            prefix = bias.name if len(bias.uses()) == 1 else f"{bias.name}.{node.name or node.outputs[0].name}"
            output = ir.Value(name=f"{prefix}.zsq_out", shape=bias.shape, type=bias.type)
            quantizer = BIAS.make_node({"bias": bias, "input_scale": input_scale, "weight_scale": weight_scale}, outputs=[output], name=f"zsq/{prefix}")
            graph.insert_before(node, quantizer)
            node.replace_input_with(2, output)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
