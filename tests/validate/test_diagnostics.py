"""Per-layer SQNR pairing, float layers, cross-check, inspection, and gates."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from tests.conftest import to_proto
from zsq_onnx.cli import main
from zsq_onnx.errors import AccuracyGateError, BadInputError
from zsq_onnx.gates import check_gates
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import quantize
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import build_recipe
from zsq_onnx.validate.diagnostics import cross_check, float_layers, layer_outputs, layer_powers
from zsq_onnx.validate.inspection import inspect_model
from zsq_onnx.validate.metrics import power_ratio_db


@pytest.fixture(scope="module")
def emitted(digits):
    _, model, entry = digits
    inputs = entry.preprocessing.apply(digits_split("test").images[:64])
    return model, emit(quantize(model, [inputs], build_recipe(bits="W4A8", profile="sim"))), inputs


def test_layers_pair_bn_and_quantized_graphs(emitted):
    model, quantized, inputs = emitted
    assert [name for name, _ in layer_outputs(model)] == [name for name, _ in layer_outputs(quantized)] == ["0", "3", "6", "11"]
    layers, signal, noise = layer_powers(model, quantized, inputs)
    assert [name for name, _ in layers] == ["0", "3", "6", "11"]
    assert power_ratio_db(signal[0], noise[0]) > power_ratio_db(signal[1], noise[1])  # the 8-bit first layer beats the 4-bit one


def test_no_float_layers_and_a_clean_cross_check(emitted):
    _, quantized, inputs = emitted
    assert float_layers(quantized) == []
    assert cross_check(quantized, inputs[:16]) == []


def test_inspect_reports_bits_and_granularity(emitted, tmp_path):
    _, quantized, _ = emitted
    rows = inspect_model(quantized)["quantizers"]
    weights = [row for row in rows if row["role"] == "weight"]
    assert [row["bits"] for row in weights] == [8, 4, 4, 8]
    assert all(row["granularity"].startswith("per_channel") for row in weights)
    assert {row["granularity"] for row in rows if row["role"] == "activation"} == {"per_tensor"}
    path = tmp_path / "q.onnx"
    onnx.save(to_proto(quantized), path)
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["quantizers"]) == len(rows)


def test_gates():
    report = {"fp32": {"top1": 0.9}, "quantized": {"top1": 0.88, "agreement": 0.95}}
    check_gates(report, 0.95, 2.01)
    with pytest.raises(AccuracyGateError, match="agreement"):
        check_gates(report, 0.96, None)
    with pytest.raises(AccuracyGateError, match="drop"):
        check_gates(report, None, 1.5)
    with pytest.raises(BadInputError, match="--eval-data"):
        check_gates({"fp32": {"top1": None}, "quantized": {"top1": None, "agreement": 1.0}}, None, 1.0)


def test_eval_reports_top5_latency_and_layers(digits, tmp_path):
    _, model, _ = digits
    test = digits_split("test")
    data, fp32, quantized = tmp_path / "d.npz", tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    np.savez(data, images=test.images, labels=test.labels)
    onnx.save(to_proto(model), fp32)
    assert CliRunner().invoke(main, ["convert", str(fp32), "-o", str(quantized), "--samples", "32", "--synth-steps", "20", "--quiet"]).exit_code == 0
    result = CliRunner().invoke(main, ["eval", str(quantized), "--data", str(data), "--reference", str(fp32), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    quantized_measures = report["quantized"]
    assert quantized_measures["top5"] >= quantized_measures["top1"] > 0.9 and quantized_measures["latency_ms_b1"] > 0 and quantized_measures["latency_ms_b64"] > 0
    assert len(report["layers"]) == 4 and report["size_bytes"]["fp32"] > report["size_bytes"]["quantized"]
    result = CliRunner().invoke(main, ["eval", str(quantized), "--data", str(data), "--provider", "cuda"])
    if result.exit_code != 0:
        assert result.exit_code == 2 and "provider" in result.stderr
