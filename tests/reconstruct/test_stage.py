"""The reconstruction stage in the pipeline on digits-cnn: weights stay on their quantizers'
grids (the profile's widths and ranges), emission keeps the nearest model's scales and integer
ranges, and the emitted model runs in ORT as the torch simulation computes it."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from tests.conftest import to_proto
from tests.test_profiles import _assert_ort_equals_torch
from zsq_onnx.cli import main
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import convert, quantize
from zsq_onnx.plan.calibrate import METADATA_KEY as CALIBRATION_KEY
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.registry import Role, constant_output, input_for
from zsq_onnx.recipe import Recipe, build_recipe
from zsq_onnx.reconstruct.stage import METADATA_KEY, weight_quantizer
from zsq_onnx.synth.distill import distill
from zsq_onnx.validate import render
from zsq_onnx.validate import report as reports


@pytest.fixture(scope="module")
def setting(digits):
    _, model, entry = digits
    batches = distill(model, entry.input_shape, build_recipe(samples=32, synth_steps=5).synth, 0, progress=False).batches
    return model, batches, entry.preprocessing.apply(digits_split("test").images[:128])


def _weight_integers(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per constant 8-bit-or-narrower integer DequantizeLinear input (the weights, not the int32
    biases): its integers and its scale."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        node.input[0]: (inits[node.input[0]].astype(np.int64), inits[node.input[1]])
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype.kind in "iu" and inits[node.input[0]].dtype.itemsize == 1
    }


@pytest.mark.parametrize(("rounding", "profile", "bits", "granularity", "symmetric", "integers"), [
    ("gptq", "ort-cpu", "W4A8", "per_channel", True, True), ("gptq", "ort-cpu", "W8A8", "per_tensor", True, True),
    ("gptq", "sim", "W3A8", "per_channel", True, False), ("gptq", "sim", "W2A8", "per_tensor", False, False),
    ("adaround", "ort-cpu", "W4A8", "per_channel", True, True),
])
def test_reconstructed_weights_stay_on_the_profile_grid_and_ort_equals_torch(setting, rounding, profile, bits, granularity, symmetric, integers):
    """Where sim emits dequantized float weights (no integer kernel takes them) their grid is
    checked in the quantized graph, where each quantizer reproduces its reconstructed weight."""
    model, batches, inputs = setting
    options = dict(bits=bits, profile=profile, keep_ends_8bit=False, weight_granularity=granularity, weight_symmetric=symmetric)
    nearest = quantize(model, batches, build_recipe(**options))
    recipe = build_recipe(**options, weight_rounding=rounding)
    quantized = quantize(model, batches, dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, iterations=50)))
    record = json.loads(quantized.metadata_props[METADATA_KEY])
    assert [layer["node"] for layer in record["layers"]] == [node.name for node in quantized.graph if weight_quantizer(node) is not None]
    assert all(layer["error"] <= layer["nearest_error"] for layer in record["layers"])
    assert any(layer["error"] < layer["nearest_error"] for layer in record["layers"])
    for node in quantized.graph:
        if weight_quantizer(node) is not None:
            quantizer = weight_quantizer(node)
            np.testing.assert_array_equal(constant_output(quantizer), input_for(quantizer, Role.SOURCE).const_value.numpy())
    emitted, reference = to_proto(emit(quantized)), to_proto(emit(nearest))
    rounded, nearest_integers = _weight_integers(emitted), _weight_integers(reference)
    assert rounded.keys() == nearest_integers.keys() and bool(rounded) == integers
    changed = 0
    for name, (integers, scale) in rounded.items():
        expected, expected_scale = nearest_integers[name]
        np.testing.assert_array_equal(scale, expected_scale)
        assert expected.min() <= integers.min() and integers.max() <= expected.max(), name
        changed += int((integers != expected).sum())
    assert changed or not integers
    _assert_ort_equals_torch(quantized, emitted, inputs)


def test_nearest_runs_no_reconstruction(setting):
    model, batches, _ = setting
    assert METADATA_KEY not in quantize(model, batches, build_recipe(bits="W4A8")).metadata_props


@pytest.mark.parametrize("rounding", ["gptq", "adaround"])
def test_bias_correction_measures_reconstructed_weights_against_the_float_ones(setting, rounding):
    """Reconstruction rewrites each quantizer's source with its rounded weights; bias correction
    must still see the error against the float weights, or it silently corrects nothing."""
    model, batches, _ = setting
    recipe = build_recipe(bits="W4A8", profile="sim", weight_rounding=rounding)
    recipe = dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, iterations=20))
    shifts = json.loads(quantize(model, batches, recipe).metadata_props[CALIBRATION_KEY])["bias_correction"]["max_abs_shift"]
    assert shifts and all(shift > 0 for shift in shifts.values())


def test_recipe_round_trip_keeps_weight_rounding_and_reads_old_recipes():
    recipe = build_recipe(bits="W4A8", weight_rounding="gptq")
    assert Recipe.from_json(recipe.to_json()) == recipe
    old = recipe.to_dict()
    del old["reconstruct"]
    assert Recipe.from_dict(old).reconstruct.weight_rounding == "nearest"
    with pytest.raises(Exception, match="weight-rounding"):
        build_recipe(weight_rounding="best")


def test_cli_convert_with_gptq(tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = CliRunner().invoke(main, ["convert", "digits-cnn", "-o", str(out), "--bits", "W4A8", "--weight-rounding", "gptq", "--samples", "8", "--synth-steps", "1",
                                       "--report", str(report), "--quiet"])
    assert result.exit_code == 0, result.output
    content = json.loads(report.read_text())
    assert content["recipe"]["reconstruct"]["weight_rounding"] == "gptq"
    section = content["reconstruction"]
    assert (section["method"], section["mode"]) == ("gptq", "layer")
    assert len(section["units"]) == 4 and section["units"][-1]["name"].endswith("Gemm")
    assert all(unit["error_after"] <= unit["error_before"] and unit["seconds"] > 0 for unit in section["units"])
    total = section["total"]
    assert total["units"] == 4 and total["improved"] >= 1 and total["error_after"] < total["error_before"]
    assert total["error_before"] == pytest.approx(sum(unit["error_before"] for unit in section["units"]))
    assert "## Reconstruction (gptq, layer mode)" in report.with_suffix(".md").read_text()
    assert "reconstruction gptq (layer mode): 4 layers" in result.output


def test_convert_shows_a_bar_per_layer_when_progress_is_on(setting, tmp_path, capsys):
    model, batches, _ = setting
    quantize(model, batches, build_recipe(bits="W4A8", weight_rounding="gptq"))
    assert "reconstruct" not in capsys.readouterr().err
    convert("digits-cnn", tmp_path / "out.onnx", build_recipe(bits="W4A8", weight_rounding="gptq", samples=8, synth_steps=1), progress=True)
    assert re.search(r"reconstruct: +\d+%.*layer", capsys.readouterr().err)  # tqdm may skip the 100% refresh of a fast bar


def test_report_reads_layer_and_block_records():
    """The report's section has one shape for both modes; the block stage writes "mode": "block"
    and per block its name, error before and after, and seconds."""
    model = ir.Model(ir.Graph([], [], nodes=[]), ir_version=10)
    assert reports.reconstruction_section(model) is None
    blocks = [{"node": "layer1.0", "nearest_error": 2.0, "error": 0.5, "rows_changed": 3, "seconds": 1.5, "kept": True, "layers": ["a", "b"]},
              {"node": "layer1.1", "nearest_error": 1.0, "error": 1.0, "rows_changed": 0, "seconds": 0.5, "kept": False, "layers": ["c"]}]
    model.metadata_props[METADATA_KEY] = json.dumps({"weight_rounding": "adaround", "mode": "block", "layers": blocks})
    section = reports.reconstruction_section(model)
    assert section["units"][0] == {"name": "layer1.0", "error_before": 2.0, "error_after": 0.5, "seconds": 1.5, "rows_changed": 3, "kept": True, "layers": ["a", "b"]}
    assert section["total"] == {"units": 2, "improved": 1, "error_before": 3.0, "error_after": 1.5, "seconds": 2.0}
    line = render._reconstruction_line(section)
    assert "adaround (block mode): 2 blocks, 1 improved" in line and "3 -> 1.5 (-50.0%)" in line
    table = render._reconstruction_table(section)
    assert table.splitlines()[0].startswith("| block |") and "| layer1.0 | 2 | 0.5 | -75.0% | 1.50 |" in table
    model.metadata_props[METADATA_KEY] = json.dumps({"method": "gptq", "mode": "block", "blocks": [{"block": "b", "error_before": 1.0, "error_after": 0.5, "seconds": 1.0}]})
    assert reports.reconstruction_section(model)["units"] == [{"name": "b", "error_before": 1.0, "error_after": 0.5, "seconds": 1.0}]
    layers = [{"node": "conv", "nearest_error": 4.0, "error": 3.0, "rows_changed": 2, "seconds": 0.25}]
    model.metadata_props[METADATA_KEY] = json.dumps({"weight_rounding": "gptq", "layers": layers})  # written before "method" and "mode"
    section = reports.reconstruction_section(model)
    assert (section["method"], section["mode"]) == ("gptq", "layer")
    assert section["units"] == [{"name": "conv", "error_before": 4.0, "error_after": 3.0, "seconds": 0.25, "rows_changed": 2}]
