"""Block-wise reconstruction (BRECQ/QDrop): the blocks a graph splits into, and block mode in the
pipeline on digits-cnn: it lowers block output errors on distilled samples it was not fitted
on, keeps weights on the profile's grid, and the emitted model runs in ORT as torch computes it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import to_proto
from tests.reconstruct.test_stage import _weight_integers
from tests.test_profiles import _assert_ort_equals_torch
from zsq_onnx.cli import main
from zsq_onnx.errors import BadInputError
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from zsq_onnx.pipeline import quantize
from zsq_onnx.plan.calibrate import stream
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.registry import Role, constant_output, input_for
from zsq_onnx.recipe import Recipe, build_recipe
from zsq_onnx.reconstruct.blocks import float_name, partition
from zsq_onnx.reconstruct.stage import METADATA_KEY, weight_quantizer
from zsq_onnx.synth.distill import distill

ITERATIONS = 150

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setting(digits):
    """digits-cnn, 64 distilled samples to fit on, 64 others to check on, real test images."""
    _, model, entry = digits
    synth = build_recipe(samples=64, synth_steps=5).synth
    fitted = distill(model, entry.input_shape, synth, 0, progress=False).batches
    held_out = distill(model, entry.input_shape, synth, 1, progress=False).batches
    from zsq_onnx.models.digits_cnn import digits_split

    return model, fitted, held_out, entry.preprocessing.apply(digits_split("test").images[:128])


def _block_recipe(iterations: int = ITERATIONS, **options) -> Recipe:
    recipe = build_recipe(weight_rounding="adaround", reconstruct="block", **options)
    return dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, block_iterations=iterations))


def _contiguous(blocks, model) -> None:
    assert blocks[0].input == model.graph.inputs[0].name
    assert blocks[-1].output == model.graph.outputs[0].name
    for before, after in zip(blocks, blocks[1:]):
        assert before.output == after.input


@pytest.mark.parametrize("profile", ["ort-cpu", "sim"])
def test_digits_cnn_splits_into_one_block_per_layer(setting, profile):
    model, fitted, _, _ = setting
    quantized = quantize(model, fitted, build_recipe(bits="W4A8", profile=profile, keep_ends_8bit=False))
    blocks = partition(quantized)
    _contiguous(blocks, quantized)
    layers = [node.name for node in quantized.graph if weight_quantizer(node) is not None]
    assert [block.layers for block in blocks] == [(name,) for name in layers]
    assert all(block.static_quantizers for block in blocks[:-1])  # each conv block ends with its output's quantizer
    folded = {value.name for node in apply_passes(model, FoldBatchNormPass()).graph for value in node.outputs} | {"input"}
    assert all(float_name(quantized, block.input) in folded and float_name(quantized, block.output) in folded for block in blocks)


@pytest.mark.parametrize("profile", ["ort-cpu", "sim"])
def test_a_residual_block_is_one_block(resnet20_random, profile):
    """ResNet-20: the stem, nine residual blocks (two convs and the skip Add each, option A
    shortcuts included) and the classifier."""
    _, model, entry = resnet20_random
    batches = [np.random.default_rng(0).standard_normal((4, *entry.input_shape)).astype(np.float32)]
    quantized = quantize(model, batches, build_recipe(bits="W4A8", profile=profile, bias_correction=False))
    blocks = partition(quantized)
    _contiguous(blocks, quantized)
    assert [len(block.layers) for block in blocks] == [1] + [2] * 9 + [1]
    op_types = {node.name: node.op_type for node in quantized.graph}
    adds = [name for name, op in op_types.items() if op == "Add"]
    assert len(adds) == 9
    assert all(sum(op_types[name] == "Add" for name in block.nodes) == 1 for block in blocks[1:-1])


def _block_errors(quantized, folded, batches) -> list[float]:
    """Per block of ``quantized``, its output's mean squared error against the float graph's, on
    ``batches`` (ORT)."""
    blocks = partition(quantized)
    names = [block.output for block in blocks]
    references = [float_name(quantized, name) for name in names]
    data = [np.concatenate(batches)]
    actual = next(stream(quantized, names, data))
    expected = next(stream(folded, list(dict.fromkeys(references)), data))
    return [float(np.mean((actual[name] - expected[reference]) ** 2)) for name, reference in zip(names, references)]


def test_block_mode_lowers_block_errors_on_samples_it_was_not_fitted_on(setting):
    model, fitted, held_out, _ = setting
    folded = apply_passes(model, FoldBatchNormPass())
    options = dict(bits="W3A3", profile="sim", keep_ends_8bit=False, bias_correction=False)
    nearest = quantize(model, fitted, build_recipe(**options))
    block = quantize(model, fitted, _block_recipe(**options))
    record = json.loads(block.metadata_props[METADATA_KEY])
    assert record["mode"] == "block" and record["weight_rounding"] == "adaround"
    assert [entry["node"] for entry in record["layers"]] == [b.name for b in partition(block)]
    assert all(entry["error"] <= entry["nearest_error"] and entry["seconds"] > 0 for entry in record["layers"])
    before, after = _block_errors(nearest, folded, held_out), _block_errors(block, folded, held_out)
    assert after[-1] < 0.5 * before[-1], (before, after)
    assert sum(a < b for a, b in zip(after, before)) >= len(before) - 1, (before, after)


@pytest.mark.parametrize(("profile", "bits", "granularity", "integers"), [
    ("ort-cpu", "W4A8", "per_channel", True), ("sim", "W3A4", "per_tensor", False),
])
def test_block_mode_weights_stay_on_the_profile_grid_and_ort_equals_torch(setting, profile, bits, granularity, integers):
    model, fitted, _, inputs = setting
    options = dict(bits=bits, profile=profile, keep_ends_8bit=False, weight_granularity=granularity)
    nearest = quantize(model, fitted, build_recipe(**options))
    quantized = quantize(model, fitted, _block_recipe(iterations=60, **options))
    for node in quantized.graph:
        quantizer = weight_quantizer(node)
        if quantizer is not None:
            np.testing.assert_array_equal(constant_output(quantizer), input_for(quantizer, Role.SOURCE).const_value.numpy())
        elif node.domain == "zsq" and input_for(node, Role.SCALE) is not None:
            assert (input_for(node, Role.SCALE).const_value.numpy() > 0).all()
    record = json.loads(quantized.metadata_props[METADATA_KEY])
    assert any(entry["kept"] and entry["steps"] for entry in record["layers"])
    emitted, reference = to_proto(emit(quantized)), to_proto(emit(nearest))
    rounded, nearest_integers = _weight_integers(emitted), _weight_integers(reference)
    assert rounded.keys() == nearest_integers.keys() and bool(rounded) == integers
    for name, (levels, scale) in rounded.items():
        expected, expected_scale = nearest_integers[name]
        np.testing.assert_array_equal(scale, expected_scale)
        assert expected.min() <= levels.min() and levels.max() <= expected.max(), name
    _assert_ort_equals_torch(quantized, emitted, inputs)


def test_block_mode_needs_adaround_and_round_trips():
    for rounding in ("nearest", "gptq"):
        with pytest.raises(BadInputError, match="--weight-rounding adaround"):
            build_recipe(weight_rounding=rounding, reconstruct="block")
    recipe = _block_recipe(bits="W4A8")
    assert Recipe.from_json(recipe.to_json()) == recipe
    old = recipe.to_dict()
    del old["reconstruct"]["mode"], old["reconstruct"]["block_iterations"]
    assert Recipe.from_dict(old).reconstruct.mode == "layer"
    result = CliRunner().invoke(main, ["convert", "digits-cnn", "-o", "never.onnx", "--reconstruct", "block", "--quiet"])
    assert result.exit_code == 2 and "--weight-rounding adaround" in result.output


def block_reconstructed_initializers() -> dict[str, np.ndarray]:
    """Every initializer of digits-cnn W4A4 sim after block mode (30 steps per block)."""
    from zsq_onnx import pipeline

    loaded = pipeline.load_model("digits-cnn")
    batches = distill(loaded.model, loaded.input_shape, build_recipe(samples=32, synth_steps=3, synth_batch_size=16).synth, seed=3, progress=False).batches
    quantized = quantize(loaded.model, batches, _block_recipe(iterations=30, bits="W4A4", profile="sim"))
    return {name: value.const_value.numpy().copy() for name, value in quantized.graph.initializers.items()}


@pytest.mark.extended
def test_two_ranks_reconstruct_blocks_as_one_process(tmp_path):
    """Each rank streams its part of the batches; rank 0 fits and hands the result on."""
    from tests.test_distributed import run_ranks, run_single

    single = run_single(block_reconstructed_initializers)
    for values in run_ranks(block_reconstructed_initializers, folder=tmp_path):
        assert values.keys() == single.keys()
        for name, value in single.items():
            np.testing.assert_array_equal(values[name], value, err_msg=name)
