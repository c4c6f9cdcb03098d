"""The quantizer registry: the built-in kinds, the queries by role, and a kind registered by a
test alone that TorchGraph, ORT, fine-tuning and inspection then handle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx_ir as ir
import pytest
import torch
from onnxscript import opset21 as op
from onnxscript import script

from zsq_onnx.errors import UnsupportedOpError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.finetune.loop import trainable_names
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions, new_initializer
from zsq_onnx.quantizers import registry
from zsq_onnx.quantizers.adaptive import ADAPTIVE
from zsq_onnx.quantizers.bias import BIAS
from zsq_onnx.quantizers.common import zsq
from zsq_onnx.quantizers.registry import InputRole, NodeInputs, QuantizerKind, Role
from zsq_onnx.quantizers.static import STATIC, STATIC_CLIP
from zsq_onnx.recipe import QuantSpec
from zsq_onnx.validate.inspection import quantizer_table


def _graph() -> tuple[ir.Graph, ir.Value]:
    source = ir.Value(name="x", shape=ir.Shape(["N", 4, 3, 3]), type=ir.TensorType(ir.DataType.FLOAT))
    return ir.Graph([source], [], nodes=[], name="g"), source


def _model(graph: ir.Graph, *nodes: ir.Node) -> ir.Model:
    for node in nodes:
        graph.append(node)
        graph.outputs.append(node.outputs[0])
    model = ir.Model(graph, ir_version=10)
    model.opset_imports[""] = 21
    ensure_quantizer_functions(model)
    return model


def test_builtin_kinds_are_registered_with_functions_that_take_their_inputs():
    assert {kind.op_type for kind in registry.kinds()} >= {"StaticQuantize", "StaticQuantizeClip", "GranularQuantize", "AdaptiveQuantize", "BiasQuantize"}
    for kind in registry.kinds():
        proto = registry.function_protos()[kind.op_type]
        assert (proto.domain, proto.name, list(proto.input)) == ("zsq", kind.op_type, [entry.name for entry in kind.inputs])
        assert registry.kind_for(kind.op_type) is kind
    assert [kind for kind in registry.kinds() if kind.calibrated_static] == [STATIC, STATIC_CLIP]
    with pytest.raises(KeyError, match="registered"):
        registry.kind_for("NoSuchQuantize")


def test_the_package_imports_without_torch():
    code = "import sys, zsq_onnx.quantizers.registry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_kind_of_knows_zsq_quantizers_only():
    graph, source = _graph()
    static = add_static_quantizer(graph, source, np.array(0.1), np.array(0), QuantSpec(8, True), axis=1)
    assert registry.kind_of(static) is STATIC and registry.is_calibrated_static(static)
    assert registry.kind_of(ir.Node("", "StaticQuantize", [source])) is None, "the domain counts"
    assert registry.kind_of(ir.Node("zsq", "NoSuchQuantize", [source])) is None
    assert not registry.is_calibrated_static(None) and not registry.is_calibrated_static(ir.Node("", "Relu", [source]))


def test_inputs_by_role_and_integer_ranges():
    graph, source = _graph()
    static = add_static_quantizer(graph, source, np.array(0.1), np.array(0), QuantSpec(8, True), axis=1, prefix="a")
    clip = add_static_quantizer(graph, source, np.array(0.1), np.array(0), QuantSpec(3, True), axis=1, prefix="b")
    granular = add_granular_quantizer(graph, source, QuantSpec(4, False, "granular"), prefix="c")
    assert registry.kind_of(clip) is STATIC_CLIP
    assert registry.input_for(static, Role.SOURCE) is source and registry.input_for(static, Role.SCALE).name == "a_scale"
    assert registry.input_for(static, Role.QMIN) is None and registry.inputs_for(ir.Node("", "Relu", [source]), Role.SOURCE) == ()
    assert registry.integer_range(static) == (-128, 127)
    assert registry.integer_range(clip) == (-4, 3)
    assert registry.integer_range(granular) == (0, 15)
    assert registry.input_for(granular, Role.SCALE) is None, "a granular quantizer stores no scale"


def test_adapters_and_bias_roles():
    graph, source = _graph()
    values = {entry.name: new_initializer(graph, entry.name, np.zeros(1, np.float32)) for entry in ADAPTIVE.inputs[1:]}
    adaptive = ADAPTIVE.make_node({"x": source, **values}, name="q")
    assert [v.name for v in registry.inputs_for(adaptive, Role.ADAPTER)] == ["down_weight", "down_bias", "up_weight", "up_bias"]
    with pytest.raises(ValueError, match="inputs_for"):
        registry.input_for(adaptive, Role.ADAPTER)
    assert [(entry.role, value.name) for entry, value in registry.trainable_inputs(adaptive)] == [
        (Role.SOURCE, "x"), (Role.SCALE, "scale"), *((Role.ADAPTER, name) for name in ("down_weight", "down_bias", "up_weight", "up_bias"))]
    bias = BIAS.make_node({"bias": values["scale"], "input_scale": values["qmin"], "weight_scale": values["qmax"]}, name="b")
    assert [entry.role for entry, _ in registry.trainable_inputs(bias)] == [Role.SOURCE], "the scales belong to other quantizers"
    assert registry.integer_range(bias) is None and not registry.is_calibrated_static(bias)


def test_make_node_names_every_input():
    graph, source = _graph()
    with pytest.raises(ValueError, match=r"unknown \['scales'\], missing \['scale', 'zero_point'\]"):
        STATIC.make_node({"x": source, "scales": source}, name="q")


# A throwaway kind, defined here only: an identity "quantizer" with a scale and a zero point.
@script(zsq, default_opset=op)
def ThrowawayQuantize(x, scale, zero_point):
    """The identity (its scale and zero point are read, not used)."""
    return op.Identity(x)


SEEN: list[tuple[dict, NodeInputs]] = []


def _throwaway(inputs: list, attrs: dict, node: NodeInputs):
    SEEN.append((attrs, node))
    x, scale, _ = inputs
    return x * (scale / scale.detach())  # x, with a gradient for the scale


THROWAWAY = QuantizerKind("ThrowawayQuantize", ThrowawayQuantize, _throwaway, (
    InputRole("x", Role.SOURCE, trainable=True), InputRole("scale", Role.SCALE, trainable=True), InputRole("zero_point", Role.ZERO_POINT)))


@pytest.fixture
def throwaway():
    registry.register(THROWAWAY)
    SEEN.clear()
    yield THROWAWAY
    registry.unregister(THROWAWAY.op_type)


def test_register_checks_the_function_and_the_op_type(throwaway):
    with pytest.raises(ValueError, match=r"its function is ThrowawayQuantize\(x, scale, zero_point\)"):
        registry.register(QuantizerKind("ThrowawayQuantize", ThrowawayQuantize, _throwaway, THROWAWAY.inputs[:2]))
    with pytest.raises(ValueError, match="registered already"):
        registry.register(QuantizerKind("ThrowawayQuantize", ThrowawayQuantize, lambda inputs, attrs, node: None, THROWAWAY.inputs))
    assert registry.register(THROWAWAY) is THROWAWAY, "registering the same kind again is harmless"


def test_a_registered_kind_runs_trains_and_is_inspected(throwaway):
    graph, source = _graph()
    activation = throwaway.make_node({
        "x": source, "scale": new_initializer(graph, "x_scale", np.array(0.5, np.float32)),
        "zero_point": new_initializer(graph, "x_zero_point", np.array(0), ir.DataType.UINT8)}, name="qa")
    weight = new_initializer(graph, "w", np.ones((4, 4, 1, 1), np.float32))
    weights = throwaway.make_node({
        "x": weight, "scale": new_initializer(graph, "w_scale", np.array(0.25, np.float32)),
        "zero_point": new_initializer(graph, "w_zero_point", np.array(0), ir.DataType.INT8)}, name="qw")
    conv = ir.Node("", "Conv", [activation.outputs[0], weights.outputs[0]], num_outputs=1, name="conv")
    graph.append(activation)
    graph.append(weights)
    model = _model(graph, conv)
    assert ("zsq", "ThrowawayQuantize", "") in model.functions

    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    expected = make_session(model).run(None, {"x": x})[0]
    student = TorchGraph(model, trainable=True)
    np.testing.assert_allclose(student(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert SEEN[0] == ({}, NodeInputs((False, True, True), (int(ir.DataType.FLOAT),) * 2 + (int(ir.DataType.UINT8),))), "no hidden attributes"
    assert SEEN[1][1].constant == (True, True, True)
    student(torch.from_numpy(x)).sum().backward()
    assert student.parameter("x_scale").grad is not None

    names = trainable_names(model, train_weights=True)
    assert (names.scales, names.adapters, names.weights) == (("x_scale", "w_scale"), (), ("w",))
    rows = {row["tensor"]: row for row in quantizer_table(model)}
    assert (rows["x"]["role"], rows["x"]["bits"], rows["x"]["signed"], rows["x"]["granularity"]) == ("activation", 8, False, "per_tensor")
    assert (rows["w"]["role"], rows["w"]["signed"], rows["w"]["scale_max"], rows["w"]["zero_points_all_zero"]) == ("weight", True, 0.25, True)

    registry.unregister(throwaway.op_type)
    assert registry.kind_of(activation) is None
    with pytest.raises(UnsupportedOpError, match="zsq.ThrowawayQuantize"):
        TorchGraph(model)
