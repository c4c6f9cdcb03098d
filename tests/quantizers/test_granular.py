"""The granular (GranQ) quantizer: ORT equals torch within one step, straight-through gradients."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from tests.quantizers.graphs import one_quantizer_model
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer
from zsq_onnx.quantizers.granular import granular_quantize
from zsq_onnx.recipe import QuantSpec


def _granular_model(shape: tuple[int, ...], bits: int) -> ir.Model:
    source = ir.Value(name="x", shape=ir.Shape(["N", *shape[1:]]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="g")
    node = add_granular_quantizer(graph, source, QuantSpec(bits, False, "granular"))
    return one_quantizer_model(graph, node)


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("shape", [(3, 5, 6, 7), (2, 4, 9)])
def test_granular_ort_equals_torch_within_one_lsb(bits, shape):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 4, shape[:2]).reshape(*shape[:2], *[1] * (len(shape) - 2)) + 0.5).astype(np.float32)
    x[0, 0] = 1.25  # a constant channel: exact
    x[1, 1, 0] = 0.0
    model = _granular_model(shape, bits)
    actual = make_session(model).run(None, {"x": x})[0]
    with torch.no_grad():
        expected = TorchGraph(model)(torch.from_numpy(x)).numpy()
    grouped = x.reshape(*shape[:2], -1)
    low, high = np.minimum(grouped.min(2), 0), np.maximum(grouped.max(2), 0)
    step = (np.maximum(high - low, 1e-8) / (2**bits - 1)).reshape(*shape[:2], *[1] * (len(shape) - 2))
    zero_point = np.round(-low.reshape(step.shape) / step)
    reference = (np.clip(np.round(x / step) + zero_point, 0, 2**bits - 1) - zero_point) * step
    assert np.all(np.abs(actual - expected) <= step * 1.001)
    assert np.all(np.abs(actual - reference) <= step * 1.001)
    assert np.mean(actual == expected) > 0.99
    np.testing.assert_array_equal(actual[0, 0], x[0, 0])
    levels = np.round(actual / step + zero_point).reshape(*shape[:2], -1)
    assert levels.min() >= 0 and levels.max() <= 2**bits - 1
    assert np.abs(actual - x).max(axis=tuple(range(2, len(shape)))).max() <= step.max() / 2 * 1.001
    assert (actual[x == 0] == 0).all(), "zero stays exact"


def test_granular_straight_through_gradient():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = granular_quantize(x, torch.tensor(15.0))
    (y * torch.arange(3.0).reshape(1, 3, 1, 1)).sum().backward()
    assert torch.allclose(x.grad.sum(dim=(2, 3)), torch.arange(3.0).repeat(2, 1) * 16, atol=1e-4)
