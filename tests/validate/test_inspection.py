"""Inspection of an intermediate model: zsq quantizers read by input role."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantize_bias import QuantizeBiasPass
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions, new_initializer
from zsq_onnx.recipe import QuantSpec
from zsq_onnx.validate.inspection import describe, inspect_model, quantizer_table


def _model(granular: bool) -> ir.Model:
    """x -> (granular or static 4-bit) -> Conv(static 3-bit weight, bias) -> y, bias quantized."""
    source = ir.Value(name="x", shape=ir.Shape(["N", 2, 4, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="g")
    spec = QuantSpec(4, False, "granular" if granular else "per_tensor")
    activation = add_granular_quantizer(graph, source, spec) if granular else add_static_quantizer(graph, source, np.array(0.1), np.array(3), spec, axis=1)
    weight = new_initializer(graph, "w", np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 2, 2, 1))
    weights = add_static_quantizer(graph, weight, np.full(3, 0.2, np.float32), np.zeros(3), QuantSpec(3, True, "per_channel"), axis=0)
    bias = new_initializer(graph, "b", np.array([0.5, -0.25, 1.0], np.float32))
    conv = ir.Node("", "Conv", [activation.outputs[0], weights.outputs[0], bias], num_outputs=1, name="conv")
    for node in (activation, weights, conv):
        graph.append(node)
    graph.outputs.append(conv.outputs[0])
    model = ir.Model(graph, ir_version=10)
    model.opset_imports[""] = 21
    ensure_quantizer_functions(model)
    QuantizeBiasPass()(model)
    return model


def test_static_rows_and_no_bias_row():
    model = _model(granular=False)
    assert any(node.op_type == "BiasQuantize" for node in model.graph), "the bias is quantized (and left out of the table)"
    rows = {row["tensor"]: row for row in quantizer_table(model)}
    assert set(rows) == {"x", "w"}
    assert (rows["x"]["role"], rows["x"]["bits"], rows["x"]["signed"], rows["x"]["granularity"], rows["x"]["zero_points_all_zero"]) == ("activation", 4, False, "per_tensor", False)
    assert (rows["w"]["role"], rows["w"]["bits"], rows["w"]["signed"], rows["w"]["granularity"]) == ("weight", 3, True, "per_channel(axis=0)")


def test_a_granular_quantizer_has_no_stored_scale():
    model = _model(granular=True)
    rows = {row["tensor"]: row for row in quantizer_table(model)}
    assert set(rows) == {"x", "w"}
    assert rows["x"] | {"consumer": ""} == {
        "tensor": "x", "role": "activation", "consumer": "", "bits": 4, "signed": False, "granularity": "granular",
        "scale_min": None, "scale_max": None, "zero_points_all_zero": None, "levels": "uniform", "table": None,
    }
    assert "computed in graph" in describe(inspect_model(model))
