"""The lookup-table weight quantizer: its level tables, nearest-level codes, straight-through
gradients, and ONNX Runtime = torch = numpy on the same weights."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from tests.quantizers.graphs import one_quantizer_model
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.options import WeightLevels
from zsq_onnx.passes.quantizer_nodes import add_lut_quantizer
from zsq_onnx.quantizers.lut import codes, initial_alpha, level_table, lut_quantize, thresholds
from zsq_onnx.quantizers.registry import constant_output
from zsq_onnx.quantizers.spec import QuantSpec


@pytest.mark.parametrize("levels", list(WeightLevels))
@pytest.mark.parametrize("bits", range(2, 9))
def test_tables_fit_their_codes_and_are_symmetric_around_one_zero(levels, bits):
    table = level_table(levels, bits)
    assert table.dtype == np.float32 and table.size == 2**bits - 1 <= 2**bits
    assert np.all(np.diff(table) > 0), "sorted, no repeated level"
    np.testing.assert_array_equal(table, -table[::-1])
    assert np.count_nonzero(table == 0) == 1 and table[-1] == 1


@pytest.mark.parametrize(("levels", "ratio"), [(WeightLevels.POST, np.sqrt(2)), (WeightLevels.POT, 2.0)])
def test_post_levels_are_powers_of_root_two_and_pot_powers_of_two(levels, ratio):
    positive = level_table(levels, 4)[8:]
    assert positive.size == 7
    np.testing.assert_allclose(positive[1:] / positive[:-1], ratio, rtol=1e-6)
    assert positive[0] == pytest.approx(ratio**-6)


def test_uniform_table_is_narrow_range_symmetric_uniform():
    np.testing.assert_allclose(level_table(WeightLevels.UNIFORM, 3) * 3, np.arange(-3, 4), atol=1e-6)


def test_codes_pick_the_nearest_level_with_ties_to_the_lower_one():
    table = level_table(WeightLevels.POST, 4)
    alpha = np.array([[2.0], [0.5]], np.float32)
    weight = (np.random.default_rng(0).standard_normal((2, 500)) * alpha).astype(np.float32)
    found = codes(weight, alpha, table)
    nearest = np.abs((weight / alpha)[..., None] - table).argmin(-1)
    np.testing.assert_array_equal(found, nearest)
    assert found.max() == table.size - 1 and found.min() == 0, "values beyond alpha take the end levels"
    midpoint = thresholds(table)[9]
    assert codes(np.array([midpoint]), np.ones(1, np.float32), table)[0] == 9


def test_initial_alpha_is_a_percentile_per_channel_and_one_for_zero_channels():
    weight = np.zeros((3, 2, 5, 5), np.float32)
    weight[0] = np.linspace(-2, 1, 50).reshape(2, 5, 5)
    weight[1] = 0.5
    alpha = initial_alpha(weight, axis=0, percentile=100)
    assert alpha.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(alpha.ravel(), [2.0, 0.5, 1.0])
    assert initial_alpha(weight, axis=None).shape == (1, 1, 1, 1)


def test_straight_through_gradients():
    table = torch.from_numpy(level_table(WeightLevels.POST, 3))
    w = torch.linspace(-3, 3, 61, requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    out = lut_quantize(w, alpha, table)
    out.sum().backward()
    inside = w.detach().abs() <= 2
    assert torch.all(w.grad[inside] == 1) and torch.all(w.grad[~inside] == 0)
    level = out.detach() / 2
    expected = torch.where(inside, level - w.detach() / 2, level).sum()
    assert alpha.grad.item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("levels", list(WeightLevels))
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_ort_equals_torch_equals_numpy_exactly(levels, bits, per_channel):
    weight = (np.random.default_rng(bits).standard_normal((6, 4, 3, 3)) * np.linspace(0.01, 1, 6)[:, None, None, None]).astype(np.float32)
    source = ir.Value(name="w", shape=ir.Shape(weight.shape), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="lut")
    alpha = initial_alpha(weight, 0 if per_channel else None)
    node = add_lut_quantizer(graph, source, alpha, QuantSpec(bits, True, "per_channel" if per_channel else "per_tensor", levels))
    model = one_quantizer_model(graph, node)
    by_ort = make_session(model).run(None, {"w": weight})[0]
    with torch.no_grad():
        by_torch = TorchGraph(model)(torch.from_numpy(weight)).numpy()
    np.testing.assert_array_equal(by_ort, by_torch)
    constant = ir.Value(name="w", const_value=ir.tensor(weight, name="w"))
    node.replace_input_with(0, constant)
    np.testing.assert_array_equal(constant_output(node), by_ort)
    assert max(len(np.unique(channel)) for channel in by_ort) <= 2**bits - 1


def test_lookup_tables_are_symmetric_weight_levels_only():
    with pytest.raises(BadInputError, match="symmetric"):
        QuantSpec(4, False, "per_channel", "post")
    with pytest.raises(BadInputError, match="weight quantizer"):
        QuantSpec(4, True, "per_channel", "apot")
