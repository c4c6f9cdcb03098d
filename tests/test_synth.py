"""ZeroQ distillation on TorchGraph."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import parse_model
from zsq_onnx.errors import NoBatchNormError
from zsq_onnx.recipe import SynthConfig
from zsq_onnx.synth import batchnorm_stats, distill


def test_loss_drops_tenfold_on_digits(digits):
    _, model, entry = digits
    result = distill(model, entry.input_shape, SynthConfig(samples=64, steps=200, batch_size=64), seed=0, progress=False)
    assert result.loss_curve[0] / result.loss_curve[-1] >= 10
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
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }
        """
    )
    with pytest.raises(NoBatchNormError, match="--calibration-data"):
        batchnorm_stats(model, "plain.onnx")
