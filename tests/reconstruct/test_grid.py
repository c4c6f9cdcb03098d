"""GPTQ and AdaRound on non-uniform grids (POST and power-of-two lookup tables): the grid's
nearest code is the lookup-table quantizer's, its floor is the level below, and reconstruction
is never worse than nearest rounding on the calibration objective, with every value on the
table."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reconstruct.test_gptq import _correlated_inputs, _grid
from zsq_onnx.options import WeightLevels
from zsq_onnx.quantizers.lut import codes, initial_alpha, level_table
from zsq_onnx.recipe import ReconstructConfig
from zsq_onnx.reconstruct.adaround import adaround_levels, floor_levels
from zsq_onnx.reconstruct.gptq import Grid, gptq_levels, output_error
from zsq_onnx.reconstruct.stage import reconstruct_layer


def _lookup(weight: np.ndarray, levels: WeightLevels, bits: int, per_channel: bool = True) -> Grid:
    alpha = initial_alpha(weight, 0 if per_channel else None)
    return Grid.lookup(alpha.reshape(-1) if per_channel else alpha.reshape(()), level_table(levels, bits))


def _on_table(values: np.ndarray, grid: Grid) -> bool:
    scale = np.asarray(grid.scale, np.float32).reshape(-1, 1) if np.size(grid.scale) > 1 else np.float32(grid.scale)
    return bool(np.all(np.isin(values, np.asarray(grid.table[None, :] * scale, np.float32)) if np.size(grid.scale) > 1 else np.isin(values, grid.table * scale)))


@pytest.mark.parametrize(("levels", "bits", "per_channel"), [(WeightLevels.POST, 3, True), (WeightLevels.POST, 4, False), (WeightLevels.POT, 3, True), (WeightLevels.POT, 8, True)])
def test_lookup_grid_rounds_as_the_lut_quantizer_and_floors_to_the_level_below(levels, bits, per_channel):
    rng = np.random.default_rng(bits)
    weight = (rng.normal(size=(6, 20)) * rng.uniform(0.05, 1, size=(6, 1))).astype(np.float32)
    grid = _lookup(weight, levels, bits, per_channel)
    alpha = np.asarray(grid.scale, np.float32).reshape(-1, 1) if per_channel else np.asarray(grid.scale, np.float32)
    np.testing.assert_array_equal(grid.levels(weight), codes(weight, alpha, grid.table))
    np.testing.assert_array_equal(grid.nearest(weight), grid.table[codes(weight, alpha, grid.table)] * alpha)
    floor = grid.floor(weight)
    low, high = grid.values(floor), grid.values(np.minimum(floor + 1, grid.qmax))
    inside = (weight >= grid.values(np.full_like(floor, grid.qmin))) & (weight < grid.values(np.full_like(floor, grid.qmax)))
    assert np.all((low[inside] <= weight[inside]) & (weight[inside] < high[inside]))
    assert np.all(floor[weight >= grid.values(np.full_like(floor, grid.qmax))] == grid.qmax)
    # a weight on a level floors to that level, whichever way the division rounds
    np.testing.assert_array_equal(grid.floor(grid.nearest(weight)), grid.levels(weight))


def test_uniform_floor_settles_on_exact_levels():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 30))
    for symmetric in (True, False):
        grid = _grid(weight, 3, per_channel=True, symmetric=symmetric)
        on_grid = grid.nearest(weight)
        np.testing.assert_array_equal(grid.floor(on_grid), grid.levels(weight))
        fraction = floor_levels(weight, grid)[1]
        assert fraction.min() >= 0 and fraction.max() <= 1


@pytest.mark.parametrize(("levels", "bits"), [(WeightLevels.POST, 3), (WeightLevels.POST, 4), (WeightLevels.POT, 3), (WeightLevels.POT, 4)])
@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_reconstruction_on_a_lookup_table_is_never_worse_than_nearest_and_stays_on_the_table(levels, bits, method):
    rng = np.random.default_rng(bits + 10 * (levels == WeightLevels.POT))
    weight = rng.normal(size=(8, 27)) * rng.uniform(0.1, 2, size=(8, 1))
    inputs = _correlated_inputs(rng, 27, 200)
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    grid = _lookup(weight, levels, bits)
    config = ReconstructConfig(weight_rounding=method, iterations=300)
    if method == "gptq":
        raw = grid.values(gptq_levels(weight, hessian, grid))
    else:
        found, h = adaround_levels(weight, hessian, grid, iterations=300)
        floor, _ = floor_levels(weight, grid)
        assert set(np.unique(h)) <= {0, 1}
        np.testing.assert_array_equal(found, np.clip(floor + h, grid.qmin, grid.qmax))
        raw = grid.values(found)
    assert _on_table(raw, grid)
    if method == "gptq":  # AdaRound alone may lose to nearest in a few hundred steps; the stage keeps the better per row
        assert output_error(weight, raw, hessian).sum() < output_error(weight, grid.nearest(weight), hessian).sum()
    rounded, nearest_error, error, changed = reconstruct_layer(weight, [hessian], grid, config)
    assert _on_table(rounded, grid) and changed > 0
    np.testing.assert_array_equal(grid.nearest(rounded), rounded)
    objective = lambda result: output_error(weight, result, hessian)  # noqa: E731
    assert np.all(objective(rounded) <= objective(grid.nearest(weight)))
    assert error < nearest_error
    np.testing.assert_allclose(error, objective(rounded).sum())


def test_gptq_on_a_uniform_table_equals_gptq_on_the_uniform_grid():
    """A lookup table of evenly spaced levels is the uniform grid by another name: GPTQ takes the
    same levels on both (codes shifted by qmin), but for rounding ties, which random weights miss."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(6, 16))
    inputs = _correlated_inputs(rng, 16, 100)
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    qmax = 3
    scale = (np.abs(weight).max(axis=1) / qmax).astype(np.float32)
    uniform = Grid(scale, np.zeros(6, np.int64), -qmax, qmax)
    table = Grid.lookup(scale, np.arange(-qmax, qmax + 1, dtype=np.float32))
    np.testing.assert_array_equal(gptq_levels(weight, hessian, uniform) + qmax, gptq_levels(weight, hessian, table))
