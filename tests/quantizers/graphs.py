"""A one-quantizer model for the kind tests."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions


def one_quantizer_model(graph: ir.Graph, node: ir.Node) -> ir.Model:
    """``graph`` ending in ``node`` (its output the model's), with the zsq functions, checked in
    full and read back from its proto as a saved file would be."""
    graph.append(node)
    graph.outputs.append(node.outputs[0])
    model = ir.Model(graph, ir_version=10)
    model.opset_imports[""] = 21
    ensure_quantizer_functions(model)
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)
