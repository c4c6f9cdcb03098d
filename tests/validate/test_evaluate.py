"""Evaluation: typed FP32 vs quantized measures, the report sections they make, evaluate_files, and
one schema for convert's report and ``zsq-onnx eval --json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import to_proto
from zsq_onnx.io.onnx_io import save_onnx
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import convert, load_model, quantize
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import Recipe, build_recipe
from zsq_onnx.synth.distill import SynthResult
from zsq_onnx.validate import render, report
from zsq_onnx.validate.evaluate import Evaluation, LayerSqnr, Measures, ModelSizes, describe, evaluate, evaluate_files, file_report, serialized_bytes


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
    assert evaluation.provider == "cpu" and evaluation.size_bytes == ModelSizes(serialized_bytes(fp32), serialized_bytes(quantized))
    unlabelled = evaluate(fp32, quantized, inputs, None, "distilled")
    assert unlabelled.fp32.top1 is unlabelled.quantized.top5 is None and unlabelled.agreement == evaluation.agreement


def test_a_quantized_model_alone_has_no_comparison(models):
    fp32, quantized, inputs, labels = models
    alone = evaluate(None, quantized, inputs, labels, "digits-test")
    assert alone.fp32 is alone.agreement is alone.output_sqnr_db is None and alone.layers == ()
    assert alone.quantized.top1 == evaluate(fp32, quantized, inputs, labels, "digits-test").quantized.top1
    assert alone.size_bytes == ModelSizes(None, serialized_bytes(quantized))
    assert alone.to_dict()["fp32"] is None and alone.to_dict()["size_bytes"] == {"fp32": None, "quantized": serialized_bytes(quantized)}


EVALUATION = Evaluation(
    "digits-test", 360, "cpu", Measures(0.99, 1.0, 0.1, 2.0), Measures(0.98, 1.0, 0.05, 1.0), 0.97, 31.5, (LayerSqnr("0", "conv_out", 40.0), LayerSqnr("3", "fc_out", 35.0)),
    {"accuracy": "ORT_ENABLE_ALL, QDQ fused into ORT CPU integer kernels", "why": "none can saturate"}, ModelSizes(4000, 1000),
)


def test_to_dict_is_the_reports_evaluation_sections(digits):
    expected = {
        "eval": {"dataset": "digits-test", "samples": 360, "provider": "cpu",
                 "execution": {"accuracy": "ORT_ENABLE_ALL, QDQ fused into ORT CPU integer kernels", "why": "none can saturate"}},
        "fp32": {"top1": 0.99, "top5": 1.0, "latency_ms_b1": 0.1, "latency_ms_b64": 2.0},
        "quantized": {"top1": 0.98, "top5": 1.0, "latency_ms_b1": 0.05, "latency_ms_b64": 1.0, "agreement": 0.97, "output_sqnr_db": 31.5},
        "layers": [{"layer": "0", "tensor": "conv_out", "sqnr_db": 40.0}, {"layer": "3", "tensor": "fc_out", "sqnr_db": 35.0}],
        "size_bytes": {"fp32": 4000, "quantized": 1000},
    }
    assert json.dumps(EVALUATION.to_dict()) == json.dumps(expected)  # keys in the same order
    _, model, _ = digits
    calibration = SynthResult([np.zeros((2, 1, 8, 8), np.float32)], [2.0, 1.0], {}, 1.0)
    built = report.build("digits-cnn", Recipe().to_dict(), EVALUATION, calibration, model, model, {}, {"total": 1.0})
    assert list(built) == ["model", "recipe", "eval", "fp32", "quantized", "layers", "size_bytes", "calibration", "activation_ranges", "bias_correction",
                           "seconds", "distributed", "runtime", "peak_memory_mb"]
    expected["quantized"]["quantizers"] = {"weights": 0, "biases": 0, "activations": 0}
    assert json.dumps({key: built[key] for key in expected}) == json.dumps(expected)
    assert "agreement 97.00%" in render.summary(built)


def _files(labels, folder, fp32=None, quantized=None) -> dict[str, str]:
    """Paths of the FP32 and quantized .onnx files (written when given) and of digits' first test
    images with ``labels`` as an .npz."""
    paths = {"fp32": folder / "fp32.onnx", "quantized": folder / "q.onnx", "data": folder / "digits.npz"}
    for key, model in (("fp32", fp32), ("quantized", quantized)):
        if model is not None:
            onnx.save(to_proto(model), paths[key])
    np.savez(paths["data"], images=digits_split("test").images[: len(labels)], labels=labels)
    return {key: str(path) for key, path in paths.items()}


def test_evaluate_files_reports_a_model_against_its_reference(models, tmp_path):
    fp32, quantized, inputs, labels = models
    paths = _files(labels, tmp_path, fp32, quantized)
    evaluation = evaluate_files(paths["quantized"], paths["data"], paths["fp32"])
    assert (evaluation.samples, evaluation.agreement) == (64, evaluate(fp32, quantized, inputs, labels, "").agreement)
    document = file_report(evaluation, paths["quantized"], paths["fp32"])
    assert list(document) == ["model", "reference", "eval", "fp32", "quantized", "layers", "size_bytes"]
    assert (document["model"], document["reference"], document["eval"]["dataset"]) == (paths["quantized"], paths["fp32"], "digits")
    assert [sorted(layer) for layer in document["layers"]] == [["layer", "sqnr_db", "tensor"]] * 4
    assert document["size_bytes"] == {"fp32": Path(paths["fp32"]).stat().st_size, "quantized": Path(paths["quantized"]).stat().st_size}
    json.dumps(document)
    assert "agreement" in describe(evaluation, paths["quantized"], paths["fp32"])
    alone = evaluate_files(paths["quantized"], paths["data"])
    assert alone.fp32 is None and alone.quantized.top1 == evaluation.quantized.top1
    assert "agreement" not in describe(alone, paths["quantized"], None)


SHARED_SECTIONS = ("eval", "fp32", "quantized", "layers", "size_bytes")
REPORT_ONLY = {"quantized": {"quantizers"}}  # what a conversion adds: the quantizers it inserted


def test_convert_and_eval_report_one_schema(tmp_path):
    """The evaluation sections of convert's report and of ``zsq-onnx eval --json`` on the model it
    wrote, against the same FP32 model on the same data: the same keys, the same figures
    (latencies are timings, so only their keys)."""
    paths = _files(digits_split("test").labels[:64], tmp_path)
    save_onnx(load_model("digits-cnn").model, paths["fp32"])
    converted = convert("digits-cnn", paths["quantized"], build_recipe(samples=16, synth_steps=2), eval_data=paths["data"], progress=False).report
    evaluated = json.loads(report.to_json(file_report(evaluate_files(paths["quantized"], paths["data"], paths["fp32"]), paths["quantized"], paths["fp32"])))
    converted = json.loads(report.to_json(converted))
    for section in SHARED_SECTIONS:
        if isinstance(evaluated[section], dict):
            assert set(converted[section]) - REPORT_ONLY.get(section, set()) == set(evaluated[section]), section
            for key, value in evaluated[section].items():
                if not key.startswith("latency_ms"):
                    assert converted[section][key] == value, (section, key)
                else:
                    assert value > 0 and converted[section][key] > 0, (section, key)
        else:
            assert converted[section] == evaluated[section], section
    assert converted["quantized"]["agreement"] > 0.9 and len(converted["layers"]) == 4
