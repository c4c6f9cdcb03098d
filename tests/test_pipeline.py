"""End to end: convert digits-cnn data-free to W8A8 and check the emitted model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from zsq_onnx import Recipe, convert
from zsq_onnx.executors.runtime import make_session


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert")
    result = convert("digits-cnn", folder / "w8a8.onnx", Recipe(), report_path=folder / "report.json", progress=False)
    return result, folder


def test_w8a8_accuracy_within_half_a_point(converted):
    result, _ = converted
    evaluation = result.evaluation
    assert evaluation.dataset == "digits-test" and evaluation.samples == 360
    assert evaluation.fp32.top1 >= 0.97
    assert evaluation.quantized.top1 >= evaluation.fp32.top1 - 0.005
    assert evaluation.agreement >= 0.99


def test_output_is_qdq_with_per_channel_weights_and_loads_in_ort(converted):
    _, folder = converted
    model = onnx.load(folder / "w8a8.onnx")
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert not model.functions and all(n.domain == "" for n in model.graph.node)
    inits = {t.name: t for t in model.graph.initializer}
    assert not any(n.input[1] in inits for n in model.graph.node if n.op_type in ("Conv", "Gemm")), "float weights left"
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type != onnx.TensorProto.INT32]
    assert len(weight_dqs) == 4
    for node in weight_dqs:
        assert inits[node.input[0]].data_type == onnx.TensorProto.INT8
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        assert scale.ndim == 1 and scale.size == onnx.numpy_helper.to_array(inits[node.input[0]]).shape[0]
    session = make_session(model)
    logits = session.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (3, 10)


def test_report_has_the_promised_fields(converted):
    _, folder = converted
    report = json.loads((folder / "report.json").read_text())
    for path in ("fp32.top1", "quantized.top1", "quantized.agreement", "size_bytes.fp32", "size_bytes.quantized", "seconds.total"):
        section, key = path.split(".")
        assert report[section][key] is not None, path
    assert 0 <= report["quantized"]["agreement"] <= 1
    assert report["size_bytes"]["quantized"] < report["size_bytes"]["fp32"] / 2
    assert Recipe.from_dict(report["recipe"]) == Recipe()
    assert [layer["layer"] for layer in report["layers"]] == ["0", "3", "6", "11"]
    assert all(layer["sqnr_db"] > 25 for layer in report["layers"])
    assert report["ort_cpu_fusion"]["fused"] >= 2 and report["float_layers"] == [] and report["warnings"] == []
    assert (folder / "report.md").read_text().startswith("# zsq-onnx report") and (folder / "report.png").stat().st_size > 1000


def test_report_says_how_each_measurement_ran(converted):
    _, folder = converted
    report = json.loads((folder / "report.json").read_text())
    runtime = report["runtime"]
    assert runtime["onnxruntime"] and {"avx2", "avx512", "vnni", "amx"} <= set(runtime["cpu"])
    sessions = runtime["sessions"]
    for kind in ("calibration", "bias_correction", "searches", "layers"):
        assert sessions[kind] == "ORT_ENABLE_ALL, QDQ in float kernels (QDQ fusion off)", kind
    assert sessions["accuracy"] == "ORT_ENABLE_ALL, QDQ fused into ORT CPU integer kernels", "ort-cpu with 7-bit weights deploys exact integer kernels"
    assert report["eval"]["execution"]["why"] and report["ort_cpu_fusion"]["saturating_without_vnni"] == []
