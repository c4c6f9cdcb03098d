"""AdaRound on a tiny layer: every weight ends at the level below or above it, the final h is 0
or 1, and it lowers the calibration objective below nearest rounding."""

from __future__ import annotations

import numpy as np

from tests.reconstruct.test_gptq import _correlated_inputs, _grid
from zsq_onnx.reconstruct.adaround import adaround_levels, floor_levels
from zsq_onnx.reconstruct.gptq import output_error


def test_adaround_ends_at_floor_or_ceiling_with_binary_h_and_beats_nearest():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 27))
    inputs = _correlated_inputs(rng, 27, 300)
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    for symmetric in (True, False):
        grid = _grid(weight, 3, per_channel=True, symmetric=symmetric)
        levels, h = adaround_levels(weight, hessian, grid, iterations=300)
        floor, _ = floor_levels(weight, grid)
        assert set(np.unique(h)) <= {0, 1}
        np.testing.assert_array_equal(levels, np.clip(floor + h, grid.qmin, grid.qmax))
        assert np.all((levels == np.clip(floor, grid.qmin, grid.qmax)) | (levels == np.clip(floor + 1, grid.qmin, grid.qmax)))
        assert output_error(weight, grid.values(levels), hessian).sum() < 0.9 * output_error(weight, grid.nearest(weight), hessian).sum()
