"""Reconstruction composes with every option, on digits-cnn, each into ORT with ORT = torch:
per-tensor weights, granular activations, mixed precision (it rounds at the widths the search
chose), POST and power-of-two lookup tables, fine-tuning after it (static and adaptive
activation quantizers), and the TensorRT-style profiles (symmetric int8 weights, -128 unused)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from tests.conftest import to_proto
from tests.reconstruct.test_stage import _weight_integers
from tests.test_profiles import _assert_ort_equals_torch, _quantizer_outputs
from zsq_onnx.executors.runtime import Execution, make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import PRECISION_KEY, quantize, recorded_choice, tune
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.lut import LUT, codes
from zsq_onnx.quantizers.registry import Role, constant_output, input_for, integer_range, kind_of
from zsq_onnx.recipe import FinetuneConfig, MixedPrecisionConfig, build_recipe
from zsq_onnx.reconstruct.layers import LayerShape
from zsq_onnx.reconstruct.stage import METADATA_KEY, grid_of, weight_quantizer
from zsq_onnx.synth.distill import distill


@pytest.fixture(scope="module")
def setting(digits):
    _, model, entry = digits
    batches = distill(model, entry.input_shape, build_recipe(samples=32, synth_steps=5).synth, 0, progress=False).batches
    return model, batches, entry.preprocessing.apply(digits_split("test").images[:64])


def _reconstructed(model: ir.Model, batches: list[np.ndarray], rounding: str = "gptq", **options) -> ir.Model:
    recipe = build_recipe(**options, weight_rounding=rounding)
    quantized = quantize(model, batches, dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, iterations=50)))
    record = json.loads(quantized.metadata_props[METADATA_KEY])
    layers = [node.name for node in quantized.graph if weight_quantizer(node, lookup_tables=True) is not None]
    assert [layer["node"] for layer in record["layers"]] == layers and layers
    assert all(layer["error"] <= layer["nearest_error"] for layer in record["layers"])
    assert any(layer["error"] < layer["nearest_error"] for layer in record["layers"])
    for node in quantized.graph:
        quantizer = weight_quantizer(node, lookup_tables=True)
        if quantizer is not None:  # each quantizer reproduces its reconstructed weight exactly
            np.testing.assert_array_equal(constant_output(quantizer), input_for(quantizer, Role.SOURCE).const_value.numpy())
    return quantized


@pytest.mark.parametrize("options", [
    dict(bits="W4A8", profile="ort-cpu", weight_granularity="per_tensor", keep_ends_8bit=False),
    dict(bits="W4A8", profile="ort-cpu", granularity="granular", keep_ends_8bit=False),
    dict(bits="W3A4", profile="sim", granularity="granular", weight_granularity="per_tensor", keep_ends_8bit=False),
], ids=["per-tensor", "granular-ort-cpu", "granular-sim"])
def test_per_tensor_weights_and_granular_activations(setting, options):
    model, batches, inputs = setting
    quantized = _reconstructed(model, batches, **options)
    _assert_ort_equals_torch(quantized, to_proto(emit(quantized)), inputs)


def test_mixed_precision_rounds_at_the_chosen_widths(setting):
    model, batches, inputs = setting
    options = dict(bits="W8A8", profile="sim", mixed_precision=MixedPrecisionConfig(enabled=True, avg_wbits=4.0, weight_bits=(3, 4, 8)))
    quantized = _reconstructed(model, batches, **options)
    nearest = quantize(model, batches, build_recipe(**options))
    chosen = {layer["node"]: layer["bits"] for layer in recorded_choice(quantized, PRECISION_KEY)["layers"]}
    assert chosen == {layer["node"]: layer["bits"] for layer in recorded_choice(nearest, PRECISION_KEY)["layers"]}
    assert len(set(chosen.values())) > 1, chosen
    emitted = to_proto(emit(quantized))
    integers, stored = _weight_integers(emitted), 0
    for node in quantized.graph:
        quantizer = weight_quantizer(node, lookup_tables=True)
        if quantizer is None:
            continue
        bits = chosen[node.name]
        qmin, qmax = integer_range(quantizer)
        assert (qmin, qmax) in ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1), (0, (1 << bits) - 1)), (node.name, bits, qmin, qmax)
        weight = input_for(quantizer, Role.SOURCE).const_value.numpy()
        shape = LayerShape.of(node, weight.shape)
        grid, rows = grid_of(quantizer, shape), shape.rows(weight)
        levels = grid.levels(rows)
        np.testing.assert_array_equal(grid.values(levels), rows)
        assert qmin <= levels.min() and levels.max() <= qmax, node.name
        name = input_for(quantizer, Role.SOURCE).name
        for key, offset in ((f"{name}.quantized", 0), (f"{name}.quantized.u8", 128)):  # int8 kept as uint8 + 128 where kernels would saturate
            if key in integers:
                stored += 1
                assert qmin <= integers[key][0].min() - offset and integers[key][0].max() - offset <= qmax, node.name
    assert stored  # sim stores the 8-bit layers as integers, narrower ones dequantized (their grids are checked above)
    _assert_ort_equals_torch(quantized, emitted, inputs)


@pytest.mark.parametrize(("levels", "rounding", "profile"), [("post", "gptq", "sim"), ("pot", "gptq", "ort-cpu"), ("post", "adaround", "ort-cpu")])
def test_lookup_table_weights_are_codes_into_their_table(setting, levels, rounding, profile):
    """POST and power-of-two weights round to levels of their table; emission stores the codes
    the reconstruction chose, and ORT decodes them to the weights torch computes with."""
    model, batches, inputs = setting
    options = dict(bits="W3A8", profile=profile, weight_quantizer=levels, keep_ends_8bit=False)
    quantized = _reconstructed(model, batches, rounding, **options)
    nearest = quantize(model, batches, build_recipe(**options))
    quantizers = {input_for(q, Role.SOURCE).name: q for q in (weight_quantizer(node, lookup_tables=True) for node in quantized.graph) if q is not None}
    assert quantizers and all(kind_of(q) is LUT for q in quantizers.values())
    emitted = to_proto(emit(quantized))
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in emitted.graph.initializer}
    changed = 0
    for name, quantizer in quantizers.items():
        weight, alpha, table = (input_for(quantizer, role).const_value.numpy() for role in (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE))
        chosen = codes(weight, alpha, table)
        np.testing.assert_array_equal(weight, table[chosen] * alpha)
        np.testing.assert_array_equal(stored[f"{name}.codes"].astype(np.int64), chosen)
        reference = next(q for q in nearest.graph if kind_of(q) is LUT and input_for(q, Role.SOURCE).name == name)
        changed += int((chosen != codes(*(input_for(reference, role).const_value.numpy() for role in (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE)))).sum())
    assert changed
    outputs = [quantizer.outputs[0].name for quantizer in quantizers.values()]
    decoded = make_session(with_outputs(ir.serde.deserialize_model(emitted), outputs)).run(outputs, {"input": inputs[:2]})
    for (name, quantizer), value in zip(quantizers.items(), decoded):  # ORT decodes the reconstructed weights
        np.testing.assert_array_equal(value, input_for(quantizer, Role.SOURCE).const_value.numpy(), err_msg=name)
    _assert_ort_as_written_equals_torch(quantized, emitted, inputs)


def _assert_ort_as_written_equals_torch(quantized: ir.Model, emitted: onnx.ModelProto, inputs: np.ndarray) -> None:
    """ORT running the graph as written (QDQ in float kernels) computes every activation
    quantizer's output as torch does, exactly. Lookup-table layers are compared so because ORT
    CPU's integer execution quantizes their decoded float weights again, to int8 per tensor (see
    the profile's notes), with nearest rounding as with reconstruction."""
    scales = _quantizer_outputs(to_proto(quantized))
    names = list(scales)
    with torch.no_grad():
        expected = TorchGraph(quantized).run({"input": torch.from_numpy(inputs)}, names)
    actual = make_session(with_outputs(ir.serde.deserialize_model(emitted), names), execution=Execution.FLOAT_QDQ).run(names, {"input": inputs})
    for name, value in zip(names, actual):
        assert (np.abs(expected[name].numpy() - value) > scales[name] * 1.001).mean() <= 0.001, name


@pytest.mark.parametrize("activation_quantizer", ["static", "adaptive"])
def test_fine_tuning_after_reconstruction(setting, activation_quantizer):
    model, batches, inputs = setting
    options = dict(bits="W4A8", profile="sim" if activation_quantizer == "adaptive" else "ort-cpu", keep_ends_8bit=False,
                   finetune=FinetuneConfig(steps=3, batch_size=16, samples=32, train_weights=True, activation_quantizer=activation_quantizer))
    quantized = _reconstructed(model, batches, **options)
    tuned, result = tune(model, quantized, np.concatenate(batches), build_recipe(**options, weight_rounding="gptq"), progress=False)
    assert result.steps == 3
    assert METADATA_KEY in tuned.metadata_props
    _assert_ort_equals_torch(tuned, to_proto(emit(tuned)), inputs)


@pytest.mark.parametrize("profile", ["tensorrt", "ort-cuda"])
def test_tensorrt_style_profiles_keep_symmetric_int8_weights(setting, profile):
    model, batches, inputs = setting
    quantized = _reconstructed(model, batches, profile=profile)
    emitted = to_proto(emit(quantized))
    reference = _weight_integers(to_proto(emit(quantize(model, batches, build_recipe(profile=profile)))))
    integers = _weight_integers(emitted)
    assert integers.keys() == reference.keys() and integers
    changed = 0
    for name, (values, scale) in integers.items():
        assert -127 <= values.min() and values.max() <= 127, name
        np.testing.assert_array_equal(scale, reference[name][1])
        changed += int((values != reference[name][0]).sum())
    assert changed
    zero_points = [n.input[2] for n in emitted.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in emitted.graph.initializer}
    assert zero_points and not any(stored[name].any() for name in zero_points)
    _assert_ort_equals_torch(quantized, emitted, inputs)


def reconstructed_weights() -> tuple[dict[str, np.ndarray], list[dict]]:
    """digits-cnn at W4A8 by GPTQ on fixed Gaussian batches: its weights and the stage's record."""
    from zsq_onnx.pipeline import load_model

    loaded = load_model("digits-cnn")
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, *loaded.input_shape)).astype(np.float32) for n in (16, 7)]
    quantized = quantize(loaded.model, batches, build_recipe(bits="W4A8", weight_rounding="gptq"))
    weights = {input_for(q, Role.SOURCE).name: input_for(q, Role.SOURCE).const_value.numpy() for q in map(weight_quantizer, quantized.graph) if q is not None}
    return weights, json.loads(quantized.metadata_props[METADATA_KEY])["layers"]


@pytest.mark.slow
def test_two_processes_reconstruct_as_one(tmp_path):
    """With --nproc 2 each rank reads its part of every batch and the Hessians are summed over
    ranks: the weights are those of one process (to float rounding, which flips no level here).
    AdaRound and block mode read the same summed Hessians."""
    from tests.test_distributed import run_ranks, run_single

    weights, layers = run_single(reconstructed_weights)
    for ranked_weights, ranked_layers in run_ranks(reconstructed_weights, folder=tmp_path):
        assert ranked_weights.keys() == weights.keys()
        for name, value in weights.items():
            np.testing.assert_array_equal(ranked_weights[name], value, err_msg=name)
        assert [layer["node"] for layer in ranked_layers] == [layer["node"] for layer in layers]
        for mine, theirs in zip(ranked_layers, layers):
            assert mine["error"] == pytest.approx(theirs["error"], rel=1e-9)
