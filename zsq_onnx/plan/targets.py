"""Which tensors get quantizers: weights of weighted ops, and activations by a small rule table.

Activation rules map a node to the input indices whose tensor gets a quantizer:

| rule | node | inputs |
|---|---|---|
| ``weighted-op-input`` | Conv, Gemm, MatMul with an initializer weight | 0 |
| ``residual-add-input`` | Add of two computed tensors | 0, 1 |
| ``pool-input`` | GlobalAveragePool, AveragePool | 0 |
| ``pooled-reshape-input`` | Flatten, Reshape of a pool's output | 0 |

A profile picks the rules its target needs (ORT CPU and TensorRT fuse quantized residual
adds and pools; the research ``sim`` profile quantizes only weighted-op inputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from zsq_onnx.quantizers.spec import QuantSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightTarget:
    """A weighted node: its activation input, its weight initializer and the weight's channel axis."""

    node: str
    op_type: str
    activation: str
    weight: str
    weight_axis: int


def weight_axis(node: ir.Node) -> int | None:
    """Axis of output channels in the weight, or None when the node is not a weighted op."""
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


def as_weight_target(node: ir.Node) -> WeightTarget | None:
    """The node as a target when it is a Conv/Gemm/MatMul whose input 1 is a 2-D+ float initializer."""
    axis = weight_axis(node)
    if axis is None or len(node.inputs) < 2:
        return None
    activation, weight = node.inputs[0], node.inputs[1]
    if activation is None or weight is None or weight.const_value is None or len(weight.const_value.shape) < 2:
        return None
    if weight.const_value.dtype != ir.DataType.FLOAT or activation.is_initializer():
        return None
    return WeightTarget(node.name, node.op_type, activation.name, weight.name, axis)


def find_weight_targets(graph: ir.Graph) -> list[WeightTarget]:
    """Every weighted node of ``graph``, in graph order."""
    return [target for target in map(as_weight_target, graph) if target is not None]


def _computed(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is None and not value.is_initializer()


def _weighted_op_input(node: ir.Node) -> tuple[int, ...]:
    return (0,) if as_weight_target(node) is not None else ()


def _residual_add_inputs(node: ir.Node) -> tuple[int, ...]:
    if node.op_type == "Add" and node.domain in ("", "ai.onnx") and len(node.inputs) == 2 and all(map(_computed, node.inputs)):
        return (0, 1)
    return ()


def _pool_input(node: ir.Node) -> tuple[int, ...]:
    return (0,) if node.op_type in ("GlobalAveragePool", "AveragePool") and node.domain in ("", "ai.onnx") and _computed(node.inputs[0]) else ()


def _pooled_reshape_input(node: ir.Node) -> tuple[int, ...]:
    """The pool output a Flatten/Reshape reads: quantized there, and again (same range) where the
    classifier reads the reshaped tensor, ORT fuses QLinearGlobalAveragePool as for its own graphs."""
    if node.op_type not in ("Flatten", "Reshape") or node.domain not in ("", "ai.onnx") or not _computed(node.inputs[0]):
        return ()
    producer = node.inputs[0].producer()
    return (0,) if producer is not None and producer.op_type in ("GlobalAveragePool", "AveragePool") else ()


ACTIVATION_RULES: dict[str, Callable[[ir.Node], tuple[int, ...]]] = {
    "weighted-op-input": _weighted_op_input,
    "residual-add-input": _residual_add_inputs,
    "pool-input": _pool_input,
    "pooled-reshape-input": _pooled_reshape_input,
}


def activation_uses(graph: ir.Graph, rules: Sequence[str]) -> list[tuple[ir.Node, int]]:
    """(node, input index) of every activation use that ``rules`` quantize, in graph order."""
    uses = []
    for node in graph:
        indices = sorted({i for rule in rules for i in ACTIVATION_RULES[rule](node)})
        uses += [(node, index) for index in indices]
    return uses


@dataclass(frozen=True)
class QuantPlan:
    """What each quantizer will be: a spec per weighted node and per activation tensor."""

    weights: dict[str, QuantSpec]
    activations: dict[str, QuantSpec]
    rules: tuple[str, ...]


def _eight_bit(spec: QuantSpec) -> QuantSpec:
    """The 8-bit form of ``spec``; 8-bit ends are static per tensor where the rest is granular."""
    return QuantSpec(8, spec.symmetric, "per_tensor" if spec.granularity == "granular" else spec.granularity)


def _for_tensor(spec: QuantSpec, value: ir.Value) -> QuantSpec:
    """Granular needs a channel axis and spatial axes (rank 3+); other tensors are per tensor."""
    if spec.granularity == "granular" and (value.shape is None or len(value.shape) < 3):
        return QuantSpec(spec.bits, spec.symmetric, "per_tensor")
    return spec


def plan_quantization(graph: ir.Graph, weights: QuantSpec, activations: QuantSpec, rules: Sequence[str], keep_ends_8bit: bool = True) -> QuantPlan:
    """Specs for every quantizer; with ``keep_ends_8bit`` the first and last weighted nodes (weight
    and input) stay at 8 bits, static per tensor when the rest is granular. A tensor read by
    several quantized uses gets the widest spec. Granular applies to tensors whose rank is known
    to be 3 or more (run shape inference first). Nodes are keyed by name, so node names must be
    unique (NameFixPass makes them so)."""
    targets = find_weight_targets(graph)
    ends = {targets[0].node, targets[-1].node} if keep_ends_8bit and targets else set()
    weight_specs = {t.node: _eight_bit(weights) if t.node in ends else weights for t in targets}
    activation_specs: dict[str, QuantSpec] = {}
    for node, index in activation_uses(graph, rules):
        spec = _eight_bit(activations) if node.name in ends else _for_tensor(activations, node.inputs[index])
        name = node.inputs[index].name
        if name not in activation_specs or spec.bits > activation_specs[name].bits:
            activation_specs[name] = spec
    logger.info("plan: %d weight quantizers (%d kept at 8 bits), %d activation quantizers by rules %s",
                len(weight_specs), len(ends), len(activation_specs), ", ".join(rules))
    for name, spec in activation_specs.items():
        logger.debug("plan: activation %s at %d bits, %s, %s", name, spec.bits, "symmetric" if spec.symmetric else "asymmetric", spec.granularity)
    return QuantPlan(weight_specs, activation_specs, tuple(rules))
