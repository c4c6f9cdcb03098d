"""ZeroQ distillation on TorchGraph."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import parse_ir
from zsq_onnx.errors import NoBatchNormError
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.recipe import SynthConfig
from zsq_onnx.synth.distill import batchnorm_stats, distill, input_prior


def test_loss_drops_eightfold_on_digits_within_the_pixel_range(digits):
    _, model, entry = digits
    result = distill(model, entry.input_shape, SynthConfig(samples=64, steps=200, batch_size=64), seed=0, progress=False)
    assert result.loss_curve[0] / result.loss_curve[-1] >= 8
    low, high = entry.preprocessing.input_bounds()
    assert result.inputs.min() >= low.min() - 1e-6 and result.inputs.max() <= high.max() + 1e-6
    assert result.inputs.shape == (64, *entry.input_shape)
    assert len(result.final_bn_losses) == 3


def test_same_seed_same_batches(digits):
    _, model, entry = digits
    config = SynthConfig(samples=20, steps=5, batch_size=16)
    first = distill(model, entry.input_shape, config, seed=3, progress=False)
    second = distill(model, entry.input_shape, config, seed=3, progress=False)
    other = distill(model, entry.input_shape, config, seed=4, progress=False)
    assert [b.shape[0] for b in first.batches] == [16, 4]
    np.testing.assert_array_equal(first.inputs, second.inputs)
    assert not np.array_equal(first.inputs, other.inputs)


def test_model_without_batchnorm_is_refused():
    model = parse_ir(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }
        """
    )
    with pytest.raises(NoBatchNormError, match="--calibration-data"):
        batchnorm_stats(model, "plain.onnx")


def test_input_prior_is_zeroq_normal_for_standard_normalization_and_natural_for_others():
    standard = Preprocessing(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    mean, std = standard.natural_statistics()
    np.testing.assert_allclose(mean, 0, atol=1e-6)
    np.testing.assert_allclose(std, 1, atol=1e-6)
    lite = Preprocessing(1.0, (127.0,) * 3, (128.0,) * 3)
    mean, std = lite.natural_statistics()
    assert np.all((mean < 0) & (mean > -0.2)) and np.all((std > 0.4) & (std < 0.5))
    low, high = lite.input_bounds()
    np.testing.assert_allclose(low, -127 / 128)
    np.testing.assert_allclose(high, 1.0)


def test_foreign_model_without_preprocessing_keeps_zeroq_prior():
    model = parse_ir(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) { y = Relu (x) }
        """
    )
    mean, std, low, high = input_prior(model, 2)
    assert mean.tolist() == [0, 0] and std.tolist() == [1, 1] and np.isinf(low).all() and np.isinf(high).all()


def test_micro_batched_gradient_equals_the_whole_batch(digits, monkeypatch):
    import zsq_onnx.synth.distill as synth

    _, model, entry = digits
    config = SynthConfig(samples=8, steps=3, batch_size=8)
    whole = distill(model, entry.input_shape, config, seed=1, progress=False)
    monkeypatch.setattr(synth, "micro_batch_size", lambda shape: 3)
    micro = distill(model, entry.input_shape, config, seed=1, progress=False)
    np.testing.assert_allclose(micro.loss_curve, whole.loss_curve, rtol=1e-4)
    np.testing.assert_allclose(micro.inputs, whole.inputs, atol=1e-4)
