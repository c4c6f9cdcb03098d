"""Evaluate nodes whose inputs are all constant initializers, and store their outputs instead."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

logger = logging.getLogger(__name__)

MAX_ELEMENTS = 1 << 20
KEPT_OPS = frozenset({"BatchNormalization", "QuantizeLinear", "DequantizeLinear"})
KEEP_UNFOLDED = "zsq.keep_unfolded"
"""A key of ``node.meta`` (not serialized): a pass that builds constant nodes the emitted model must
keep (a lookup table's decoding) sets it, and folding leaves those nodes as they are."""


def evaluate_node(node: ir.Node, opset: int) -> list[np.ndarray]:
    """The outputs of ``node``, whose inputs are all constants, by the ONNX reference evaluator."""
    inputs = [onnx.helper.make_tensor_value_info(f"i{k}", int(v.const_value.dtype), list(v.const_value.shape)) if v is not None else None for k, v in enumerate(node.inputs)]
    proto = ir.serde.serialize_node(node)
    proto.ClearField("input")
    proto.input.extend(f"i{k}" if v is not None else "" for k, v in enumerate(node.inputs))
    proto.ClearField("output")
    proto.output.extend(f"o{k}" for k in range(len(node.outputs)))
    graph = onnx.helper.make_graph(
        [proto], "fold", [i for i in inputs if i is not None], [onnx.helper.make_value_info(f"o{k}", onnx.TypeProto()) for k in range(len(node.outputs))]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {f"i{k}": v.const_value.numpy() for k, v in enumerate(node.inputs) if v is not None}
    return ReferenceEvaluator(model).run(None, feeds)


class FoldConstantsPass(ir.passes.InPlacePass):
    """Replace standard-domain nodes that have only constant inputs with initializers.

    The TorchScript exporter leaves shape arithmetic (Shape, ConstantOfShape, Concat, ...) for
    padding and reshapes; folding it gives a graph of the ops that matter. Ops in ``kept_ops``
    (BatchNormalization and Q/DQ by default) stay, and so do outputs above ``MAX_ELEMENTS``
    (except QuantizeLinear's: integer weights of any size are smaller than their float source), and
    so do nodes marked :data:`KEEP_UNFOLDED`.
    At emission, ``kept_ops`` without QuantizeLinear turns quantized weights into integer
    initializers read by DequantizeLinear.
    """

    def __init__(self, kept_ops: frozenset[str] = KEPT_OPS) -> None:
        super().__init__()
        self.kept_ops = kept_ops

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 21)
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type in self.kept_ops or not node.inputs or node.meta.get(KEEP_UNFOLDED):
                continue
            if any(v is not None and (v.const_value is None or not v.is_initializer()) for v in node.inputs):
                continue
            if any(v is not None and v.is_graph_input() for v in node.inputs):
                logger.debug("fold constants skips %s: an input is also a graph input, which a caller may override", node.name)
                continue
            results = evaluate_node(node, opset)
            if node.op_type != "QuantizeLinear" and any(np.asarray(r).size > MAX_ELEMENTS for r in results):
                logger.debug("fold constants skips %s: an output holds more than %d elements", node.name, MAX_ELEMENTS)
                continue
            for output, array in zip(node.outputs, results):
                folded = ir.Value(name=output.name, const_value=ir.tensor(np.asarray(array), name=output.name))
                folded.shape, folded.type = folded.const_value.shape, ir.TensorType(folded.const_value.dtype)
                was_output = output.is_graph_output()
                output.replace_all_uses_with(folded, replace_graph_outputs=was_output)
                output.name = f"{output.name}.unfolded"
                folded.name = folded.const_value.name
                graph.register_initializer(folded)
            graph.remove(node, safe=True)
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
