"""Weight ranges: min/max, or the clipping of it with the least rounding error (--weight-range)."""

from __future__ import annotations

import numpy as np
import pytest

from zsq_onnx.errors import BadInputError
from zsq_onnx.passes.quantize_weights import weight_params
from zsq_onnx.quantizers.params import on_grid
from zsq_onnx.quantizers.spec import QuantSpec


def _heavy_tailed(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(3, shape).astype(np.float32)


def _rounding_error(weight: np.ndarray, spec: QuantSpec) -> np.ndarray:
    scale, zero_point = weight_params(weight, spec, axis=0)
    shape = (-1, *[1] * (weight.ndim - 1)) if spec.granularity == "per_channel" else ()
    rounded = on_grid(weight, scale.reshape(shape), zero_point.reshape(shape), spec.qmin, spec.qmax)
    return np.square(rounded - weight).reshape(len(weight), -1).sum(axis=1)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_least_error_range_is_never_worse_than_min_max_per_channel(bits, symmetric):
    weight = _heavy_tailed((16, 8, 3, 3))
    clipped = _rounding_error(weight, QuantSpec(bits, symmetric, "per_channel", weight_range="mse"))
    full = _rounding_error(weight, QuantSpec(bits, symmetric, "per_channel", weight_range="minmax"))
    assert (clipped <= full + 1e-6).all()
    if bits == 4:
        assert clipped.sum() < 0.95 * full.sum()


def test_least_error_range_per_tensor_is_one_scale_inside_min_max():
    weight = _heavy_tailed((16, 32))
    scale, zero_point = weight_params(weight, QuantSpec(4, True, "per_tensor", weight_range="mse"), axis=0)
    full, _ = weight_params(weight, QuantSpec(4, True, "per_tensor", weight_range="minmax"), axis=0)
    assert scale.shape == () and zero_point.shape == ()
    assert 0 < scale < full


def test_min_max_is_the_default():
    assert not QuantSpec(4).clips_weights and QuantSpec(4, weight_range="mse").clips_weights


def test_zero_channel_keeps_scale_one():
    weight = _heavy_tailed((4, 9))
    weight[2] = 0
    scale, _ = weight_params(weight, QuantSpec(4, True, "per_channel", weight_range="mse"), axis=0)
    assert scale[2] == 1.0 and np.isfinite(scale).all()


def test_mse_range_is_refused_for_lookup_tables():
    with pytest.raises(BadInputError, match="weight-range"):
        QuantSpec(4, True, "per_channel", "post", weight_range="mse")
    with pytest.raises(BadInputError, match="unknown weight range"):
        QuantSpec(4, weight_range="percentile")
