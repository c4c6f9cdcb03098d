"""Fine-tuning: LSQ gradients, the adaptive (ASQ) quantizer in ORT equals torch, and the
write-back round trip (train -> emit -> ORT equals the torch student)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from tests.conftest import to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.finetune.loop import kd_loss, trainable_names
from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions, new_initializer
from zsq_onnx.pipeline import quantize, tune
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers import adaptive_quantize, fake_quantize, lsq_gradient_scale, scale_gradient
from zsq_onnx.recipe import FinetuneConfig, build_recipe
from zsq_onnx.synth.distill import distill
from zsq_onnx.synth.pool import SyntheticPool


def test_lsq_step_size_gradient():
    x = torch.linspace(-3, 3, 61)
    scale = torch.tensor(0.25, requires_grad=True)
    qmin, qmax = -8, 7
    g = lsq_gradient_scale(x, scale, qmax, per_sample=False)
    assert g == pytest.approx(1 / math.sqrt(61 * 7))
    fake_quantize(x, scale_gradient(scale, g), torch.tensor(0), qmin, qmax).sum().backward()
    ratio = x / 0.25
    expected = torch.where(ratio < qmin, torch.tensor(float(qmin)), torch.where(ratio > qmax, torch.tensor(float(qmax)), ratio.round() - ratio))
    assert scale.grad.item() == pytest.approx(float(expected.sum()) * g, rel=1e-5)


def test_lsq_gradient_scale_counts_elements_per_sample_for_activations():
    x = torch.zeros(8, 4, 5, 5)
    assert lsq_gradient_scale(x, torch.ones(()), 15, per_sample=True) == pytest.approx(1 / math.sqrt(100 * 15))
    assert lsq_gradient_scale(x, torch.ones(8), 7, per_sample=False) == pytest.approx(1 / math.sqrt(100 * 7))


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits.flip(1), 2.0).item() > 0


def _adaptive_model(x: np.ndarray, bits: int, rng: np.random.Generator) -> ir.Model:
    channels = x.shape[1]
    source = ir.Value(name="x", shape=ir.Shape(["N", *x.shape[1:]]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="g")
    inputs = [
        source,
        new_initializer(graph, "scale", np.array(float(x.max() - x.min()) / (2**bits - 1), np.float32)),
        new_initializer(graph, "zero_point", np.array(round(-x.min() / (float(x.max() - x.min()) / (2**bits - 1)))), ir.DataType.UINT8),
        new_initializer(graph, "qmin", np.array(0), ir.DataType.UINT8),
        new_initializer(graph, "qmax", np.array(2**bits - 1), ir.DataType.UINT8),
        new_initializer(graph, "down_weight", rng.standard_normal((2, channels)).astype(np.float32)),
        new_initializer(graph, "down_bias", np.full(2, 0.5, np.float32)),
        new_initializer(graph, "up_weight", rng.uniform(0.1, 0.3, (1, 2)).astype(np.float32)),
        new_initializer(graph, "up_bias", np.ones(1, np.float32)),
    ]
    node = ir.Node("zsq", "AdaptiveQuantize", inputs, num_outputs=1, name="q")
    node.outputs[0].name, node.outputs[0].type, node.outputs[0].shape = "y", ir.TensorType(ir.DataType.FLOAT), source.shape
    graph.append(node)
    graph.outputs.append(node.outputs[0])
    model = ir.Model(graph, ir_version=10)
    model.opset_imports[""] = 21
    ensure_quantizer_functions(model)
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_adaptive_quantizer_ort_equals_torch_within_one_lsb(bits):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((6, 8, 5, 5)) * rng.uniform(0.2, 3, (6, 1, 1, 1))).astype(np.float32)
    model = _adaptive_model(x, bits, rng)
    actual = make_session(model).run(None, {"x": x})[0]
    graph = TorchGraph(model)
    with torch.no_grad():
        expected = graph(torch.from_numpy(x)).numpy()
        weights = {name: graph.parameter(name) for name in ("down_weight", "down_bias", "up_weight", "up_bias")}
        beta = torch.relu(torch.relu(torch.from_numpy(x).mean((2, 3)) @ weights["down_weight"].T + weights["down_bias"]) @ weights["up_weight"].T + weights["up_bias"])
    step = (graph.parameter("scale") * beta.reshape(-1)).numpy().reshape(-1, 1, 1, 1)
    assert len(np.unique(step)) > 1, "the adapter gives each sample its own step"
    assert np.all(np.abs(actual - expected) <= step * 1.001)
    assert np.mean(np.abs(actual - expected) <= step * 1e-3) > 0.99, "steps differ only by float rounding of the adapter"
    assert np.all(np.round(actual / step) - np.round(actual / step).min(axis=(1, 2, 3), keepdims=True) <= 2**bits - 1)


def test_adaptive_quantizer_trains_its_adapter():
    x = torch.randn(4, 8, 3, 3)
    down_weight = torch.randn(2, 8, requires_grad=True)
    up_weight = torch.zeros(1, 2, requires_grad=True)
    y = adaptive_quantize(x, torch.tensor(0.1), torch.tensor(8), 0, 15, down_weight, torch.zeros(2), up_weight, torch.ones(1))
    ((y - 2 * x) ** 2).sum().backward()
    assert up_weight.grad.abs().sum() > 0


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
    scales = {n.outputs[0].name: float(n.inputs[1].const_value.numpy().max()) for n in trained.graph
              if n.domain == "zsq" and n.op_type.startswith("Static") and n.inputs[0].const_value is None}
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
        from zsq_onnx.profiles import get_profile

        get_profile("tensorrt").check(build_recipe(profile="tensorrt", finetune=FinetuneConfig(steps=1, activation_quantizer="adaptive")))
    if not torch.cuda.is_available():
        from zsq_onnx.finetune.loop import _device

        with pytest.raises(BadInputError, match="CUDA"):
            _device("cuda")


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
