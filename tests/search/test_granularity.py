"""GranQ granular activations in models: ORT equals torch, the auto choice, profiles (the
quantizer itself: tests/quantizers/test_granular.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.pipeline import quantize, recorded_choice
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import build_recipe, target_notes
from zsq_onnx.search.granularity import METADATA_KEY, candidates
from zsq_onnx.search.select import upgrade_order
from zsq_onnx.synth.distill import distill


@pytest.fixture(scope="module")
def setting(digits):
    _, model, entry = digits
    batches = distill(model, entry.input_shape, build_recipe(samples=32, synth_steps=20).synth, 0, progress=False).batches
    return model, batches


@pytest.mark.parametrize("profile", ["sim", "ort-cpu"])
def test_granular_model_ort_equals_torch(setting, profile):
    model, batches = setting
    quantized = quantize(model, batches, build_recipe(bits="W4A4", profile=profile, granularity="granular"))
    kinds = [n.op_type for n in quantized.graph if n.domain == "zsq"]
    assert kinds.count("GranularQuantize") >= 2 and "StaticQuantize" in kinds  # the 8-bit first input stays static
    emitted = to_proto(emit(quantized))
    inputs = np.concatenate(batches)[:16]
    with torch.no_grad():
        expected = TorchGraph(quantized)(torch.from_numpy(inputs)).numpy()
    actual = make_session(emitted).run(None, {"input": inputs})[0]
    assert (expected.argmax(1) == actual.argmax(1)).mean() >= 0.9
    np.testing.assert_allclose(actual, expected, atol=0.05 * np.abs(expected).max())


def test_ort_cpu_stores_float_weights_only_for_float_layers(setting):
    model, batches = setting
    emitted = to_proto(emit(quantize(model, batches, build_recipe(bits="W4A4", profile="ort-cpu", granularity="granular"))))
    names = {t.name: t.data_type for t in emitted.graph.initializer}
    dequantized = [name for name in names if name.endswith(".dequantized")]
    assert dequantized and all(names[name] == onnx.TensorProto.FLOAT for name in dequantized)
    assert any(t == onnx.TensorProto.INT8 for t in names.values()), "the first conv keeps int8 weights"


def test_upgrade_order_prefers_noise_removed_per_millisecond():
    sqnr = {"a": {"per_tensor": 10.0, "granular": 20.0}, "b": {"per_tensor": 10.0, "granular": 20.0}, "c": {"per_tensor": 40.0, "granular": 45.0}}
    cost = {"a": {"per_tensor": 1.0, "granular": 3.0}, "b": {"per_tensor": 1.0, "granular": 2.0}, "c": {"per_tensor": 1.0, "granular": 1.5}}
    assert upgrade_order(sqnr, cost, "per_tensor") == [("b", "granular"), ("a", "granular")]  # c is already good at per-tensor


def test_auto_records_a_choice_per_tensor_within_the_candidates(setting):
    model, batches = setting
    quantized = quantize(model, batches, build_recipe(bits="W4A4", profile="ort-cpu", granularity="auto", granularity_budget=100.0))
    choice = recorded_choice(quantized, METADATA_KEY)
    assert choice is not None and len(choice["tensors"]) >= 2
    assert all(row["choice"] in candidates(build_recipe(profile="ort-cpu").profile) for row in choice["tensors"])
    assert "per_channel" not in choice["tensors"][0]["sqnr_db"]
    assert choice["chosen_vs_fp32"] <= choice["limit_vs_fp32"]
    worst = {row["tensor"]: max(row["sqnr_db"], key=row["sqnr_db"].get) for row in choice["tensors"]}
    assert all(row["choice"] == worst[row["tensor"]] or row["sqnr_db"][row["choice"]] >= 35 - 1e-6 or
               row["sqnr_db"][row["choice"]] >= max(row["sqnr_db"].values()) - 0.5 for row in choice["tensors"])
    assert json.loads(emit(quantized).metadata_props["zsq.granularity"]) == choice


def test_sim_auto_considers_per_channel_static(setting):
    model, batches = setting
    choice = recorded_choice(quantize(model, batches, build_recipe(bits="W4A4", profile="sim", granularity="auto", granularity_budget=0.0)), METADATA_KEY)
    assert set(choice["tensors"][0]["sqnr_db"]) == {"per_tensor", "per_channel", "granular"}


def test_profiles_that_cannot_run_granular_or_per_channel_say_so():
    with pytest.raises(BadInputError, match="TensorRT cannot run in-graph dynamic scales"):
        build_recipe(profile="tensorrt", granularity="granular")
    with pytest.raises(BadInputError, match="per-channel activation scales"):
        build_recipe(act_granularity="per_channel")
    with pytest.raises(BadInputError, match="activations only"):
        build_recipe(weight_granularity="granular")
    assert any("TensorRT" in note for note in target_notes(build_recipe(granularity="granular")))


def test_prefix_lengths_try_the_whole_order_first():
    from zsq_onnx.search.select import prefix_lengths

    assert prefix_lengths(18) == [18, 14, 9, 4]
    assert prefix_lengths(2) == [2, 1]
    assert prefix_lengths(0) == []
