"""Mixed precision end to end: per-layer bits in the emitted ONNX, ORT equal to the torch
simulation, sizes on disk, the report and its frontier chart."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import to_proto
from zsq_onnx import pipeline
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import FinetuneConfig, MixedPrecisionConfig, build_recipe
from zsq_onnx.search.mixed_precision import METADATA_KEY
from zsq_onnx.synth.distill import distill
from zsq_onnx.validate.inspection import inspect_model


@pytest.fixture(scope="module")
def distilled(digits):
    _, model, entry = digits
    return model, distill(model, entry.input_shape, build_recipe(samples=32, synth_steps=10).synth, 0, progress=False).batches


def _mixed(avg_wbits: float, **options) -> object:
    return build_recipe(bits="W8A8", profile="sim", mixed_precision=MixedPrecisionConfig(enabled=True, avg_wbits=avg_wbits), **options)


def test_per_layer_bits_reach_the_emitted_model_and_ort_equals_torch(distilled):
    model, batches = distilled
    quantized = pipeline.quantize(model, batches, _mixed(4.0))
    choice = json.loads(quantized.metadata_props[METADATA_KEY])
    chosen = {layer["node"]: layer["bits"] for layer in choice["layers"]}
    emitted = emit(quantized)
    weights = {row["consumer"].split(" ", 1)[1]: row["bits"] for row in inspect_model(emitted)["quantizers"] if row["role"] == "weight"}
    for node, bits in chosen.items():
        assert weights[node] <= bits, f"{node}: chose {bits} bits, stored {weights[node]}"
    inputs = batches[0][:16]
    with torch.no_grad():
        expected = TorchGraph(quantized)(torch.from_numpy(inputs)).numpy()
    actual = make_session(emitted).run(None, {"input": inputs})[0]
    assert (expected.argmax(1) == actual.argmax(1)).mean() >= 0.9
    np.testing.assert_allclose(actual, expected, atol=0.05 * np.abs(expected).max())


def test_a_lower_budget_stores_fewer_bytes(distilled):
    """Weights at 2-4 bits take int4 on disk; 5-7 bits an int8 container, as 8 bits do."""
    model, batches = distilled
    sizes = [len(to_proto(emit(pipeline.quantize(model, batches, recipe))).SerializeToString()) for recipe in (_mixed(3.0), _mixed(6.0), build_recipe(bits="W8A8", profile="sim"))]
    assert sizes[0] < min(sizes[1], sizes[2]) - 4000


def test_convert_reports_the_choice_and_draws_the_frontier(tmp_path):
    recipe = build_recipe(bits="W8A8", profile="sim", samples=16, synth_steps=4, mixed_precision=MixedPrecisionConfig(enabled=True, avg_wbits=5.0),
                          finetune=FinetuneConfig(steps=2, batch_size=8, samples=16))
    result = pipeline.convert("digits-cnn", tmp_path / "mp.onnx", recipe, report_path=tmp_path / "report.json", progress=False)
    section = result.report["mixed_precision"]
    assert section["frontier"] and 0 <= section["chosen"] < len(section["frontier"])
    assert section["frontier"][section["chosen"]]["avg_wbits"] <= 5.0 + 1e-9
    assert (tmp_path / "report.frontier.png").stat().st_size > 0 and "## Mixed precision" in (tmp_path / "report.md").read_text()
    onnx.checker.check_model(onnx.load(tmp_path / "mp.onnx"), full_check=True)


def test_a_size_budget_bounds_the_weight_bytes_on_disk(distilled):
    model, batches = distilled
    uniform4 = json.loads(pipeline.quantize(model, batches, _mixed(4.0)).metadata_props[METADATA_KEY])["uniform"]
    budget_kb = next(u["disk_bytes"] for u in uniform4 if u["bits"] == 4) / 1024
    recipe = build_recipe(bits="W8A8", profile="sim", mixed_precision=MixedPrecisionConfig(enabled=True, size_budget_kb=budget_kb))
    quantized = pipeline.quantize(model, batches, recipe)
    choice = json.loads(quantized.metadata_props[METADATA_KEY])
    point = choice["frontier"][choice["chosen"]]
    assert point["disk_bytes"] <= budget_kb * 1024
    stored = sum(value.const_value.nbytes for name, value in emit(quantized).graph.initializers.items() if name.endswith(("weight.quantized", "weight.quantized.u8")))
    assert stored == point["disk_bytes"]
