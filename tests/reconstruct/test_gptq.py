"""GPTQ on tiny layers: it equals optimal brain quantization done by brute force (the inverse
Hessian of the not-yet-rounded columns recomputed at every step), is never worse than nearest
rounding on the calibration objective, and the im2col it reads a Conv through is the Conv."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from zsq_onnx.recipe import ReconstructConfig
from zsq_onnx.reconstruct.gptq import Grid, dampened, gptq_levels, output_error
from zsq_onnx.reconstruct.layers import LayerShape
from zsq_onnx.reconstruct.stage import reconstruct_layer


def obq_reference(weight: np.ndarray, hessian: np.ndarray, grid: Grid, damping: float = 0.01) -> np.ndarray:
    """Sequential OBQ in the fixed column order, row by row: round column i, then move the
    columns not yet rounded by -err / [H_F^-1]_ii * [H_F^-1]_{:,i}, H_F^-1 inverted afresh."""
    hessian = dampened(hessian, damping)
    levels = np.zeros(weight.shape, np.int64)
    for r in range(len(weight)):
        w = weight[r].astype(np.float64).copy()
        row_grid = Grid(np.asarray(grid.scale).reshape(-1)[r % np.size(grid.scale)], np.asarray(grid.zero_point).reshape(-1)[r % np.size(grid.zero_point)],
                        grid.qmin, grid.qmax)
        for i in range(len(w)):
            remaining = np.arange(i, len(w))
            inverse = np.linalg.inv(hessian[np.ix_(remaining, remaining)])
            levels[r, i] = row_grid.levels(w[i : i + 1])[0]
            error = w[i] - float(row_grid.values(levels[r, i : i + 1])[0])
            w[remaining] -= error / inverse[0, 0] * inverse[:, 0]
    return levels


def _grid(weight: np.ndarray, bits: int, per_channel: bool, symmetric: bool = True) -> Grid:
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        absmax = np.abs(weight).max(axis=1) if per_channel else np.abs(weight).max()
        return Grid((absmax / qmax).astype(np.float32), np.zeros(np.shape(absmax), np.int64), -qmax - 1, qmax)
    low = np.minimum(weight.min(axis=1) if per_channel else weight.min(), 0)
    high = np.maximum(weight.max(axis=1) if per_channel else weight.max(), 0)
    scale = ((high - low) / ((1 << bits) - 1)).astype(np.float32)
    return Grid(scale, np.clip(np.round(-low / scale), 0, (1 << bits) - 1).astype(np.int64), 0, (1 << bits) - 1)


def _correlated_inputs(rng: np.random.Generator, features: int, count: int) -> np.ndarray:
    mixing = rng.normal(size=(features, features)) / np.sqrt(features) + np.eye(features)
    return np.maximum(mixing @ rng.normal(size=(features, count)), 0) + 0.05 * rng.normal(size=(features, count))


@pytest.mark.parametrize(("bits", "per_channel", "symmetric", "block_size"), [(4, True, True, 128), (3, False, True, 4), (2, True, False, 3), (5, True, True, 1)])
def test_gptq_on_a_linear_equals_brute_force_obq(bits, per_channel, symmetric, block_size):
    rng = np.random.default_rng(bits)
    weight = rng.normal(size=(6, 10))
    inputs = _correlated_inputs(rng, 10, 200)
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    grid = _grid(weight, bits, per_channel, symmetric)
    levels = gptq_levels(weight, hessian, grid, block_size=block_size)
    np.testing.assert_array_equal(levels, obq_reference(weight, hessian, grid))
    assert grid.qmin <= levels.min() and levels.max() <= grid.qmax


def _conv_columns(rng, shape: LayerShape, channels: int, size: int = 7) -> tuple[np.ndarray, list[np.ndarray]]:
    value = np.maximum(rng.normal(size=(4, channels, size, size)), 0)
    return value, shape.columns(value)


@pytest.mark.parametrize("geometry", [dict(strides=(1, 1), pads=(1, 1, 1, 1)), dict(strides=(2, 1), pads=(0, 1, 1, 0), dilations=(1, 2)), dict(groups=2, pads=(1, 1, 1, 1))])
def test_im2col_columns_are_what_the_conv_reads(geometry):
    rng = np.random.default_rng(0)
    shape = LayerShape("Conv", kernel=(3, 3), **{"groups": 1, **geometry})
    weight = rng.normal(size=(6, 4 // shape.groups, 3, 3))
    value, columns = _conv_columns(rng, shape, 4)
    (top, left, bottom, right) = shape.pads
    padded = torch.nn.functional.pad(torch.from_numpy(value), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(padded, torch.from_numpy(weight), stride=shape.strides, dilation=shape.dilations, groups=shape.groups).numpy()
    rows = shape.rows(weight)
    per_group = len(rows) // shape.groups
    for g, group_columns in enumerate(columns):
        produced = rows[g * per_group : (g + 1) * per_group] @ group_columns
        np.testing.assert_allclose(produced, expected[:, g * per_group : (g + 1) * per_group].transpose(1, 0, 2, 3).reshape(per_group, -1), rtol=1e-9, atol=1e-9)


def test_gptq_on_a_conv_equals_brute_force_obq_and_beats_nearest():
    rng = np.random.default_rng(1)
    shape = LayerShape("Conv", kernel=(3, 3), pads=(1, 1, 1, 1))
    weight = shape.rows(rng.normal(size=(4, 2, 3, 3)))
    _, (columns,) = _conv_columns(rng, shape, 2)
    hessian = 2 * columns @ columns.T / columns.shape[1]
    grid = _grid(weight, 3, per_channel=True)
    levels = gptq_levels(weight, hessian, grid, block_size=5)
    np.testing.assert_array_equal(levels, obq_reference(weight, hessian, grid))
    objective = lambda rounded: float(np.sum(((weight - rounded) @ columns) ** 2))  # noqa: E731
    assert objective(grid.values(levels)) < objective(grid.nearest(weight))


@pytest.mark.parametrize("seed", range(8))
def test_reconstructed_layer_is_never_worse_than_nearest_on_the_calibration_objective(seed):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(8, 12)) * rng.uniform(0.1, 2, size=(8, 1))
    inputs = _correlated_inputs(rng, 12, 64)
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    grid = _grid(weight, 3, per_channel=seed % 2 == 0, symmetric=seed % 3 != 0)
    rounded, nearest_error, error, _ = reconstruct_layer(weight, [hessian], grid, ReconstructConfig(weight_rounding="gptq"))
    objective = lambda result: float(np.sum(((weight - result) @ inputs) ** 2))  # noqa: E731
    assert objective(rounded) <= objective(grid.nearest(weight)) * (1 + 1e-12)
    assert error <= nearest_error
    np.testing.assert_allclose(error, output_error(weight, rounded, hessian).sum())
    np.testing.assert_array_equal(grid.nearest(rounded), rounded)


def test_layer_shape_reads_gemm_and_conv_attributes():
    gemm = ir.Node("", "Gemm", [], attributes=[ir.AttrInt64("transB", 1)], name="fc")
    assert LayerShape.of(gemm, (10, 32)) == LayerShape("Gemm", transposed=False)
    conv = ir.Node("", "Conv", [], attributes=[ir.AttrInt64("group", 4), ir.AttrInt64s("strides", [2, 2]), ir.AttrInt64s("pads", [1, 1, 1, 1])], name="c")
    assert LayerShape.of(conv, (8, 1, 3, 3)) == LayerShape("Conv", 4, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    same = ir.Node("", "Conv", [], attributes=[ir.AttrString("auto_pad", "SAME_UPPER")], name="s")
    assert LayerShape.of(same, (8, 1, 3, 3)) is None
