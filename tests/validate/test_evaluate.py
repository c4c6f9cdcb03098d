"""Evaluation: typed FP32 vs quantized measures, the report sections they make, and evaluate_files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from tests.conftest import to_proto
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import quantize
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import Recipe, build_recipe
from zsq_onnx.synth.distill import SynthResult
from zsq_onnx.validate import render, report
from zsq_onnx.validate.evaluate import Evaluation, LayerSqnr, Measures, describe, evaluate, evaluate_files


@pytest.fixture(scope="module")
def models(digits):
    """(FP32 model, W8A8 sim model, 64 preprocessed test inputs, their labels)."""
    _, model, entry = digits
    test = digits_split("test")
    inputs = entry.preprocessing.apply(test.images[:64])
    return model, emit(quantize(model, [inputs], build_recipe(bits="W8A8", profile="sim"))), inputs, test.labels[:64]


def test_evaluation_measures_both_models_in_ort(models):
    fp32, quantized, inputs, labels = models
    evaluation = evaluate(fp32, quantized, inputs, labels, "digits-test")
    assert (evaluation.dataset, evaluation.samples) == ("digits-test", 64)
    assert isinstance(evaluation.fp32, Measures) and isinstance(evaluation.quantized, Measures)
    assert evaluation.fp32.top1 >= 0.95 and abs(evaluation.quantized.top1 - evaluation.fp32.top1) <= 1 / 32
    assert evaluation.fp32.top1 <= evaluation.fp32.top5 <= 1 and evaluation.quantized.latency_ms_b1 > 0 and evaluation.quantized.latency_ms_b64 > 0
    assert evaluation.agreement >= 0.95 and evaluation.output_sqnr_db > 20
    assert [layer.layer for layer in evaluation.layers] == ["0", "3", "6", "11"] and all(layer.sqnr_db > 20 for layer in evaluation.layers)
    unlabelled = evaluate(fp32, quantized, inputs, None, "distilled")
    assert unlabelled.fp32.top1 is unlabelled.quantized.top5 is None and unlabelled.agreement == evaluation.agreement


EVALUATION = Evaluation(
    "digits-test", 360, Measures(0.99, 1.0, 0.1, 2.0), Measures(0.98, 1.0, 0.05, 1.0), 0.97, 31.5, (LayerSqnr("0", "conv_out", 40.0), LayerSqnr("3", "fc_out", 35.0)),
    {"accuracy": "ORT_ENABLE_ALL, QDQ fused into ORT CPU integer kernels", "why": "none can saturate"},
)


def test_to_dict_is_the_reports_evaluation_sections(digits):
    expected = {
        "eval": {"dataset": "digits-test", "samples": 360, "execution": {"accuracy": "ORT_ENABLE_ALL, QDQ fused into ORT CPU integer kernels", "why": "none can saturate"}},
        "fp32": {"top1": 0.99, "top5": 1.0, "latency_ms_b1": 0.1, "latency_ms_b64": 2.0},
        "quantized": {"top1": 0.98, "top5": 1.0, "latency_ms_b1": 0.05, "latency_ms_b64": 1.0, "agreement": 0.97, "output_sqnr_db": 31.5},
        "layers": [{"layer": "0", "tensor": "conv_out", "sqnr_db": 40.0}, {"layer": "3", "tensor": "fc_out", "sqnr_db": 35.0}],
    }
    assert json.dumps(EVALUATION.to_dict()) == json.dumps(expected)  # keys in the same order
    _, model, _ = digits
    calibration = SynthResult([np.zeros((2, 1, 8, 8), np.float32)], [2.0, 1.0], {}, 1.0)
    built = report.build("digits-cnn", Recipe(), EVALUATION, calibration, model, model, {}, {"total": 1.0})
    assert list(built) == ["model", "recipe", "eval", "fp32", "quantized", "layers", "size_bytes", "calibration", "activation_ranges", "bias_correction",
                           "seconds", "distributed", "runtime", "peak_memory_mb"]
    expected["quantized"]["quantizers"] = {"weights": 0, "biases": 0, "activations": 0}
    assert json.dumps({key: built[key] for key in expected}) == json.dumps(expected)
    assert "agreement 97.00%" in render.summary(built)


def test_evaluate_files_reports_a_model_against_its_reference(models, tmp_path):
    fp32, quantized, inputs, labels = models
    paths = {"fp32": tmp_path / "fp32.onnx", "quantized": tmp_path / "q.onnx", "data": tmp_path / "digits.npz"}
    onnx.save(to_proto(fp32), paths["fp32"])
    onnx.save(to_proto(quantized), paths["quantized"])
    np.savez(paths["data"], images=digits_split("test").images[:64], labels=labels)
    result = evaluate_files(str(paths["quantized"]), str(paths["data"]), str(paths["fp32"]))
    assert list(result) == ["model", "dataset", "samples", "provider", "top1", "top5", "latency_ms_b1", "latency_ms_b64", "size_bytes", "execution",
                            "reference", "agreement", "output_sqnr_db", "layers"]
    assert list(result["reference"]) == ["model", "top1", "top5", "latency_ms_b1", "latency_ms_b64", "size_bytes"]
    assert result["samples"] == 64 and result["agreement"] == evaluate(fp32, quantized, inputs, labels, "").agreement
    assert [sorted(layer) for layer in result["layers"]] == [["layer", "sqnr_db", "tensor"]] * 4
    json.dumps(result)
    assert "agreement" in describe(result)
