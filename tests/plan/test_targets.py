"""The rule table and the quantization plan."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass

from tests.conftest import parse_model
from tests.passes.graphs import CONV_BN, RESIDUAL
from zsq_onnx.plan.targets import find_weight_targets, plan_quantization
from zsq_onnx.recipe import QuantSpec


def _graph(text: str) -> ir.Graph:
    model = ir.serde.deserialize_model(parse_model(text))
    NameFixPass()(model)
    return model.graph


def activation_names(graph: ir.Graph, rules: tuple[str, ...] = ("weighted-op-input",)) -> list[str]:
    """The activation tensors the plan quantizes under ``rules``, in graph order."""
    spec = QuantSpec(8, False)
    return list(plan_quantization(graph, spec, spec, rules, keep_ends_8bit=False).activations)


def test_weight_targets_and_axes():
    targets = find_weight_targets(_graph(CONV_BN))
    assert [(t.op_type, t.weight, t.weight_axis) for t in targets] == [("Conv", "w", 0), ("Gemm", "fc", 0)]


def test_weighted_op_inputs():
    assert activation_names(_graph(CONV_BN)) == ["x", "f"]


def test_residual_add_inputs_skip_constant_operands():
    graph = _graph(RESIDUAL)
    assert activation_names(graph, ("weighted-op-input",)) == ["x", "r"]
    assert activation_names(graph, ("residual-add-input",)) == ["c", "x"]
    assert activation_names(graph, ("weighted-op-input", "residual-add-input")) == ["x", "r", "c"]


def test_plan_keeps_ends_at_eight_bits():
    graph = _graph(RESIDUAL)
    weights, activations = QuantSpec(4, True, "per_channel"), QuantSpec(4, False)
    plan = plan_quantization(graph, weights, activations, ("weighted-op-input", "residual-add-input"))
    assert {k: v.bits for k, v in plan.weights.items()} == {graph.node(0).name: 8, graph.node(2).name: 8}
    assert plan.activations["x"].bits == 8 and plan.activations["r"].bits == 8 and plan.activations["c"].bits == 4
    plan = plan_quantization(graph, weights, activations, ("weighted-op-input",), keep_ends_8bit=False)
    assert {v.bits for v in plan.weights.values()} == {4} and {v.bits for v in plan.activations.values()} == {4}


def test_pooled_reshape_input_quantizes_the_pool_output():
    graph = _graph(CONV_BN)
    assert activation_names(graph, ("pool-input", "pooled-reshape-input")) == ["r", "p"]
