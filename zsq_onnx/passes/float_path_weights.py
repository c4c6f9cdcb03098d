"""Store dequantized float weights for layers that cannot run as integer kernels."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.fold_constants import evaluate_node
from zsq_onnx.passes.ort_kernels import integer_kernel
from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.plan.targets import weight_axis

logger = logging.getLogger(__name__)


def _constant_dequantize(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing ``value`` from constant inputs only, or None."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or any(v is not None and v.const_value is None for v in node.inputs):
        return None
    return node


class FloatPathWeightsPass(ir.passes.InPlacePass):
    """A weighted layer that ORT CPU cannot fuse into an integer kernel (its input has a dynamic
    granular scale, or its output is not quantized per tensor) runs as a float kernel whatever
    its weights are stored as; a DequantizeLinear in front of its
    weights only stops ORT from pre-packing them (NCHWc, Conv+Add+Relu fusion), which made such
    layers twice as slow as FP32. Their weight and bias DequantizeLinear are evaluated once here:
    the float values stored are exactly the quantized ones, at 4 bytes per weight."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 21)
        modified = False
        for node in list(graph):
            if weight_axis(node) is None:
                continue
            if integer_kernel(node):
                logger.debug("float path weights skips %s: ORT CPU fuses it into an integer kernel", node.name)
                continue
            for index in range(1, len(node.inputs)):
                dequantize = _constant_dequantize(node.inputs[index])
                if dequantize is None:
                    if node.inputs[index] is not None:
                        logger.debug("float path weights skips input %d of %s: not a DequantizeLinear of constants", index, node.name)
                    continue
                value = dequantize.outputs[0]
                (array,) = evaluate_node(dequantize, opset)
                name = f"{value.name.removesuffix('.zsq_out')}.dequantized"
                node.replace_input_with(index, new_initializer(graph, name, np.asarray(array, np.float32)))
                modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
