"""Which kernels ORT CPU runs, read from its optimized graph, so the checks hold on every CPU.

An integer kernel with int8 weights beyond ±64 adds u8 x s8 products in int16 with saturation on
x86 CPUs without VNNI (AVX2 only, AMD Zen 3 among them) and exactly on VNNI CPUs: the figures of
a graph with one depend on the machine. These tests look for such kernels in the graph of every
session a conversion opens, so they fail on any machine where the code would let one in.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from zsq_onnx import convert
from zsq_onnx.executors.ort_graph import cpu_features, integer_kernels, optimized_graph, runtime_record, saturating_kernels
from zsq_onnx.executors.runtime import Execution, recording_optimized_graphs
from zsq_onnx.recipe import MixedPrecisionConfig, build_recipe

TIMING = ("search-latency", "latency")  # sessions that only time the deployed kernels


def _qdq_conv(largest_weight: int) -> onnx.ModelProto:
    """x -> Q/DQ (uint8) -> Conv with int8 per-channel weights reaching ``largest_weight`` -> Q/DQ."""
    weights = np.random.default_rng(0).integers(-50, 51, (4, 1, 3, 3))
    weights[0, 0, 0, 0] = largest_weight
    initializers = [
        numpy_helper.from_array(weights.astype(np.int8), "w"), numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"), numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"), numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "y_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 4, 8, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_full_range_int8_weights_in_an_integer_kernel_are_found():
    graph = optimized_graph(_qdq_conv(127))
    assert [node.op_type for node in integer_kernels(graph)] == ["QLinearConv"]
    assert saturating_kernels(graph) and "127" in saturating_kernels(graph)[0]


def test_weights_within_64_do_not_saturate():
    assert saturating_kernels(optimized_graph(_qdq_conv(64))) == []


def test_float_qdq_runs_no_integer_kernel():
    assert integer_kernels(optimized_graph(_qdq_conv(127), Execution.FLOAT_QDQ)) == []


def test_runtime_record_names_the_features_that_pick_kernels():
    record = runtime_record()
    assert record["onnxruntime"]
    assert {"avx2", "avx512", "vnni", "amx"} <= set(cpu_features())


RECIPES = {
    "sim": {"profile": "sim"},
    "sim-auto": {"profile": "sim", "granularity": "auto"},
    "sim-mixed": {"profile": "sim", "mixed_precision": MixedPrecisionConfig(enabled=True, avg_wbits=6.0)},
    "ort-cpu-full-range": {"profile": "ort-cpu", "reduce_range": False, "calibration_method": "entropy"},
    "tensorrt": {"profile": "tensorrt"},
}


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(RECIPES))
def test_no_measurement_session_runs_a_saturating_kernel(tmp_path, setting):
    """Every session a conversion opens (calibration, bias correction, searches, per-layer SQNR,
    evaluation, cross-check) runs a graph with no integer kernel that saturates without VNNI;
    only the sessions that time deployed kernels may hold them."""
    recipe = build_recipe(samples=16, synth_steps=4, **RECIPES[setting])
    with recording_optimized_graphs(tmp_path / "graphs") as folder:
        result = convert("digits-cnn", tmp_path / "out.onnx", recipe, progress=False)
    graphs = sorted(folder.glob("*.onnx"))
    purposes = {path.name.split(".")[1] for path in graphs}
    assert {"calibration", "evaluate", "layer-sqnr"} <= purposes
    if setting == "sim-auto":
        assert "search-error" in purposes
    for path in graphs:
        if path.name.split(".")[1] in TIMING:
            continue
        assert saturating_kernels(onnx.load(path)) == [], path.name
    if setting != "ort-cpu-full-range":
        return
    assert result.evaluation.execution["accuracy"].endswith("QDQ in float kernels (QDQ fusion off)"), "saturating kernels are validated as float QDQ"
    assert "saturate" in result.evaluation.execution["why"]
