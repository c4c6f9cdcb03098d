"""Fine-tuning: the KD loss, what trains, and the write-back round trip (train -> emit -> ORT
equals the torch student). The quantizers' own tests are in tests/quantizers."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from tests.conftest import to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.finetune.kd import kd_loss
from zsq_onnx.finetune.loop import trainable_names
from zsq_onnx.pipeline import quantize, tune
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.lut import codes
from zsq_onnx.quantizers.registry import Role, input_for, is_calibrated_static
from zsq_onnx.recipe import FinetuneConfig, build_recipe
from zsq_onnx.synth.distill import distill
from zsq_onnx.synth.pool import SyntheticPool


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits.flip(1), 2.0).item() > 0


def test_synthetic_pool_draws_augmented_batches_of_the_pool():
    inputs = np.arange(4 * 3 * 8 * 8, dtype=np.float32).reshape(4, 3, 8, 8)
    pool = SyntheticPool(inputs, seed=0)
    batches = [pool.batch(3) for _ in range(4)]
    assert all(b.shape == (3, 3, 8, 8) for b in batches)
    assert any(not any(np.array_equal(b[i], x) for x in inputs) for b in batches for i in range(3)), "some samples are augmented"


@pytest.fixture(scope="module")
def setting(digits):
    _, model, entry = digits
    pool = distill(model, entry.input_shape, build_recipe(samples=64, synth_steps=20).synth, 0, progress=False).inputs
    return model, pool


def _assert_emitted_equals_student(trained: ir.Model, inputs: np.ndarray) -> None:
    emitted = to_proto(emit(trained))
    with torch.no_grad():
        student = TorchGraph(trained)(torch.from_numpy(inputs)).numpy()
    deployed = make_session(emitted).run(None, {"input": inputs})[0]
    assert (student.argmax(1) == deployed.argmax(1)).mean() >= 0.95
    np.testing.assert_allclose(deployed, student, atol=0.03 * np.abs(student).max())


@pytest.mark.parametrize("activation_quantizer", ["static", "adaptive"])
def test_write_back_round_trip(setting, activation_quantizer):
    model, pool = setting
    config = FinetuneConfig(steps=15, batch_size=16, train_weights=True, activation_quantizer=activation_quantizer, lr=0.05, weight_lr=1e-3)
    recipe = build_recipe(bits="W4A4", profile="sim", finetune=config)
    quantized = quantize(model, [pool[:32]], recipe)
    trained, result = tune(model, quantized, pool, recipe, progress=False)
    assert result.steps == 15 and len(result.loss_curve) == 15
    names = trainable_names(trained, train_weights=True)
    assert names.scales and names.weights and bool(names.adapters) == (activation_quantizer == "adaptive")
    before = {name: value.const_value.numpy() for name, value in quantized.graph.initializers.items()}
    after = {name: value.const_value.numpy() for name, value in trained.graph.initializers.items()}
    assert any(not np.array_equal(before[name], after[name]) for name in names.scales if name in before)
    assert any(not np.array_equal(before[name], after[name]) for name in names.weights)
    _assert_emitted_equals_student(trained, pool[:32])


def test_round_trip_per_quantizer_within_one_lsb(setting):
    model, pool = setting
    recipe = build_recipe(bits="W3A3", profile="sim", keep_ends_8bit=False, finetune=FinetuneConfig(steps=10, batch_size=16, lr=0.05))
    trained, _ = tune(model, quantize(model, [pool[:32]], recipe), pool, recipe, progress=False)
    emitted = emit(trained)
    scales = {n.outputs[0].name: float(input_for(n, Role.SCALE).const_value.numpy().max()) for n in trained.graph
              if is_calibrated_static(n) and input_for(n, Role.SOURCE).const_value is None}
    names = list(scales)
    with torch.no_grad():
        expected = TorchGraph(trained).run({"input": torch.from_numpy(pool[:32])}, names)
    actual = make_session(with_outputs(emitted, names)).run(names, {"input": pool[:32]})
    for name, value in zip(names, actual):
        assert np.abs(expected[name].numpy() - value).max() <= scales[name] * 1.001, name


def test_finetune_settings_fail_clearly():
    with pytest.raises(BadInputError, match="needs|trains its adapters"):
        FinetuneConfig(activation_quantizer="adaptive")
    with pytest.raises(BadInputError, match="TensorRT"):
        build_recipe(profile="tensorrt", finetune=FinetuneConfig(steps=1, activation_quantizer="adaptive"))
    if not torch.cuda.is_available():
        from zsq_onnx.executors.torch_graph import torch_device

        with pytest.raises(BadInputError, match="CUDA"):
            torch_device("cuda")


def test_batchnorm_loss_targets_every_folded_layer_and_trains(setting):
    from zsq_onnx.finetune.loop import batchnorm_output_targets

    model, pool = setting
    config = FinetuneConfig(steps=4, batch_size=16, bn_loss=0.1)
    recipe = build_recipe(bits="W4A4", profile="sim", finetune=config)
    quantized = quantize(model, [pool[:32]], recipe)
    targets = batchnorm_output_targets(model, TorchGraph(model), TorchGraph(quantized))
    assert len(targets) == 3 and all(mean.shape == std.shape and (std >= 0).all() for _, mean, std in targets)
    trained, result = tune(model, quantized, pool, recipe, progress=False)
    assert result.steps == 4 and np.isfinite(result.loss_curve).all()
    _, kd_only = tune(model, quantized, pool, build_recipe(bits="W4A4", profile="sim", finetune=FinetuneConfig(steps=4, batch_size=16)), progress=False)
    assert result.loss_curve[0] > kd_only.loss_curve[0], "the same first batch, plus the BN-statistics term"


def test_lookup_table_weights_train_and_go_back_as_codes(setting):
    model, pool = setting
    config = FinetuneConfig(steps=10, batch_size=16, train_weights=True, lr=0.05, weight_lr=1e-3)
    recipe = build_recipe(bits="W3A4", profile="sim", weight_quantizer="post", keep_ends_8bit=False, finetune=config)
    quantized = quantize(model, [pool[:32]], recipe)
    trained, _ = tune(model, quantized, pool, recipe, progress=False)
    tables = [n for n in trained.graph if n.op_type == "LutWeightQuantize"]
    assert tables
    names = trainable_names(trained, train_weights=True)
    alphas = [input_for(n, Role.SCALE).name for n in tables]
    assert set(alphas) <= set(names.scales)
    before, after = quantized.graph.initializers, trained.graph.initializers
    assert all(not np.array_equal(before[name].const_value.numpy(), after[name].const_value.numpy()) for name in alphas)
    stored = emit(trained).graph.initializers
    for node in tables:
        weight, alpha, table = (input_for(node, role).const_value.numpy() for role in (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE))
        written = stored[f"{input_for(node, Role.SOURCE).name}.codes"]
        assert written.const_value.dtype == ir.DataType.UINT4
        np.testing.assert_array_equal(written.const_value.numpy().astype(np.int64), codes(weight, alpha, table))
    inputs = {"input": pool[:32]}
    deployed, written_back = (make_session(m).run(None, inputs)[0] for m in (emit(trained), trained))
    np.testing.assert_allclose(deployed, written_back, rtol=1e-4, atol=1e-4)


def test_generator_feeds_fine_tuning_one_generator_step_per_student_step(digits):
    from zsq_onnx.pipeline import LoadedModel, generated_inputs
    from zsq_onnx.recipe import GeneratorConfig

    _, model, entry = digits
    config = FinetuneConfig(steps=6, batch_size=8, train_weights=True, lr=0.05, weight_lr=1e-3)
    recipe = build_recipe(bits="W4A4", profile="sim", samples=16, synthesizer="generator", generator=GeneratorConfig(warmup_steps=4, batch_size=8), finetune=config)
    loaded = LoadedModel(model, entry.name, entry.input_shape, entry.preprocessing)
    calibration = generated_inputs(loaded, recipe, progress=False)
    assert len(calibration.loss_curve) == 4 and calibration.inputs.shape == (16, *entry.input_shape)
    quantized = quantize(model, calibration.batches, recipe)
    trained, result = tune(model, quantized, calibration.inputs, recipe, progress=False, game=calibration.game)
    assert result.steps == 6 and len(result.source_loss_curve) == 6 and len(calibration.game.loss_curve) == 10
    names = trainable_names(trained, train_weights=True)
    before, after = quantized.graph.initializers, trained.graph.initializers
    assert any(not np.array_equal(before[name].const_value.numpy(), after[name].const_value.numpy()) for name in names.weights)
    _assert_emitted_equals_student(trained, calibration.inputs)
    with pytest.raises(Exception, match="game"):
        tune(model, quantized, calibration.inputs, recipe, progress=False)
