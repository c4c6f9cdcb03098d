"""Which tensors get quantizers: the rule table for weighted ops (Conv, Gemm, MatMul)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir


@dataclass(frozen=True)
class QuantTarget:
    """A weighted node: its activation input, its weight initializer and the weight's channel axis."""

    node: str
    op_type: str
    activation: str
    weight: str
    weight_axis: int


def _weight_axis(node: ir.Node) -> int | None:
    """Axis of output channels in the weight, or None when the node is not a target."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = node.attributes.get("transB")
        return 0 if trans_b is not None and trans_b.as_int() else 1
    if node.op_type == "MatMul":
        return 1
    return None


def as_target(node: ir.Node) -> QuantTarget | None:
    """The node as a target when it is a Conv/Gemm/MatMul whose input 1 is a 2-D+ float initializer."""
    axis = _weight_axis(node)
    if axis is None or len(node.inputs) < 2:
        return None
    activation, weight = node.inputs[0], node.inputs[1]
    if activation is None or weight is None or weight.const_value is None or len(weight.const_value.shape) < 2:
        return None
    if weight.const_value.dtype != ir.DataType.FLOAT or activation.is_initializer():
        return None
    return QuantTarget(node.name, node.op_type, activation.name, weight.name, axis)


def find_targets(graph: ir.Graph) -> list[QuantTarget]:
    """Every target node of ``graph``, in graph order."""
    return [target for target in map(as_target, graph) if target is not None]


def activation_names(graph: ir.Graph) -> list[str]:
    """The distinct activation tensors that get quantizers, in graph order."""
    return list(dict.fromkeys(target.activation for target in find_targets(graph)))
