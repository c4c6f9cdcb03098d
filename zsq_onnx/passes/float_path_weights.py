"""Store dequantized float weights for layers that cannot run as integer kernels."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.fold_constants import evaluate_node
from zsq_onnx.passes.quant_targets import weight_axis


def _constant_dequantize(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing ``value`` from constant inputs only, or None."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or any(v is not None and v.const_value is None for v in node.inputs):
        return None
    return node


def _constant_per_tensor(node: ir.Node | None, op_type: str) -> bool:
    """Whether ``node`` is an ``op_type`` (Q or DQ) with a constant per-tensor scale."""
    if node is None or node.op_type != op_type:
        return False
    scale = node.inputs[1]
    return scale is not None and scale.const_value is not None and scale.const_value.size == 1


def _integer_kernel(node: ir.Node) -> bool:
    """Whether ORT CPU can fuse ``node`` into QLinearConv/QGemm/MatMulIntegerToFloat: its input
    is dequantized with a constant per-tensor scale and, for Conv, its output (through a Relu) is
    quantized so too (Gemm and MatMul have integer kernels with float outputs)."""
    if not _constant_per_tensor(node.inputs[0].producer() if node.inputs[0] is not None else None, "DequantizeLinear"):
        return False
    if node.op_type != "Conv":
        return True
    output = node.outputs[0]
    users = [user for user, _ in output.uses()]
    if len(users) == 1 and users[0].op_type == "Relu":
        users = [user for user, _ in users[0].outputs[0].uses()]
    return bool(users) and all(_constant_per_tensor(user, "QuantizeLinear") for user in users)


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
            if weight_axis(node) is None or _integer_kernel(node):
                continue
            for index in range(1, len(node.inputs)):
                dequantize = _constant_dequantize(node.inputs[index])
                if dequantize is None:
                    continue
                value = dequantize.outputs[0]
                (array,) = evaluate_node(dequantize, opset)
                name = f"{value.name.removesuffix('.zsq_out')}.dequantized"
                folded = ir.Value(name=name, const_value=ir.tensor(np.asarray(array, np.float32), name=name))
                folded.shape, folded.type = folded.const_value.shape, ir.TensorType(folded.const_value.dtype)
                graph.register_initializer(folded)
                node.replace_input_with(index, folded)
                modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
