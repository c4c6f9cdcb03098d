"""Quantize the float bias of Conv/Gemm whose input and weight are quantized: int32 levels of
input_scale * weight_scale, as integer kernels hold it (and as ORT would do on its own)."""

from __future__ import annotations

import onnx_ir as ir

from zsq_onnx import quantizers
from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions

STATIC_KINDS = ("StaticQuantize", "StaticQuantizeClip")


def _static_scale(value: ir.Value | None) -> ir.Value | None:
    """The scale initializer of the zsq static quantizer that produces ``value``, if any."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.domain != quantizers.DOMAIN or producer.op_type not in STATIC_KINDS:
        return None
    return producer.inputs[1]


class QuantizeBiasPass(ir.passes.InPlacePass):
    """Insert zsq.BiasQuantize on each Conv/Gemm bias whose activation scale is per-tensor and
    whose weight scale matches the bias length (per output channel or per tensor)."""

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
            ensure_quantizer_functions(model)
            output = ir.Value(name=f"{bias.name}.zsq_out", shape=bias.shape, type=bias.type)
            quantizer = ir.Node(quantizers.DOMAIN, "BiasQuantize", [bias, input_scale, weight_scale], outputs=[output], name=f"zsq/{bias.name}")
            graph.insert_before(node, quantizer)
            node.replace_input_with(2, output)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
