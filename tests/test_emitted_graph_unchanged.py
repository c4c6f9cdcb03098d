"""The same recipe emits the same graph: node by node against fingerprints taken before the
stage-folder refactor (tests/golden/*.json).

Values were re-taken when distillation moved to per-batch seeds (data-parallel synthesis), and
when calibration and bias correction moved from ORT's integer kernels to float QDQ (the same on
every CPU), and when bias correction
moved to the weights' error on float-graph means; the nodes did not change. A fingerprint keeps every node (op, domain, inputs, outputs, attributes) exactly and, per
initializer, its type, shape and two sums (signed and absolute), compared to a relative 1e-3:
synthesis and calibration run in float on whichever CPU CI has, so a last-bit difference may
move a quantization level here and there, never a node. ``ZSQ_REGENERATE_GOLDEN=1`` rewrites them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import ASSETS

GOLDEN = Path(__file__).parent / "golden"
RECIPES = {
    "w8a8-ort-cpu": {"bits": "W8A8", "samples": 8, "synth_steps": 2, "synth_batch_size": 8},
    "w4a4-granular-sim": {"bits": "W4A4", "profile": "sim", "granularity": "granular", "samples": 8, "synth_steps": 2, "synth_batch_size": 8},
}
FINETUNE = {"w4a4-granular-sim": {"steps": 2, "samples": 8, "batch_size": 8, "train_weights": True}}
MODELS = {"digits-cnn": None, "resnet20-cifar10": "resnet20_cifar10.pt"}


def fingerprint(model: onnx.ModelProto) -> dict:
    """Every node exactly; per initializer its type, shape and signed and absolute sums."""
    nodes = [
        [node.domain, node.op_type, list(node.input), list(node.output), sorted(onnx.helper.printable_attribute(a) for a in node.attribute)]
        for node in model.graph.node
    ]
    initializers = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor).astype(np.float64)
        initializers[tensor.name] = [int(tensor.data_type), list(tensor.dims), float(array.sum()), float(np.abs(array).sum())]
    return {"nodes": nodes, "initializers": initializers, "functions": sorted(f.name for f in model.functions)}


def _convert(model_name: str, recipe_name: str, tmp_path: Path) -> onnx.ModelProto:
    from zsq_onnx import pipeline
    from zsq_onnx.recipe import FinetuneConfig, build_recipe

    weights = None
    if MODELS[model_name] is not None:
        weights = ASSETS / "models" / MODELS[model_name]
        if not weights.exists():
            pytest.skip(f"assets not found under {ASSETS} (set ZSQ_ASSETS)")
    finetune = FinetuneConfig(**FINETUNE[recipe_name]) if recipe_name in FINETUNE else None
    recipe = build_recipe(**RECIPES[recipe_name], finetune=finetune)
    result = pipeline.convert(model_name, tmp_path / "out.onnx", recipe, weights=weights, progress=False)
    return onnx.load(tmp_path / "out.onnx") if not isinstance(result.model, onnx.ModelProto) else result.model


@pytest.mark.parametrize("recipe_name", RECIPES)
@pytest.mark.parametrize("model_name", MODELS)
def test_same_recipe_emits_the_same_graph(model_name: str, recipe_name: str, tmp_path: Path) -> None:
    found = fingerprint(_convert(model_name, recipe_name, tmp_path))
    path = GOLDEN / f"{model_name}_{recipe_name}.json"
    if os.environ.get("ZSQ_REGENERATE_GOLDEN"):
        path.write_text(json.dumps(found, indent=0))
    expected = json.loads(path.read_text())
    assert found["nodes"] == expected["nodes"]
    assert found["functions"] == expected["functions"]
    assert found["initializers"].keys() == expected["initializers"].keys()
    for name, (dtype, dims, total, magnitude) in expected["initializers"].items():
        got = found["initializers"][name]
        assert got[:2] == [dtype, dims], name
        assert got[3] == pytest.approx(magnitude, rel=1e-3, abs=1e-6), name
        assert got[2] == pytest.approx(total, rel=1e-3, abs=1e-3 * max(magnitude, 1e-3)), name
