"""A zsq static quantizer node run by ONNX Runtime equals its torch implementation."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from tests.quantizers.graphs import one_quantizer_model
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.passes.quantize_weights import weight_params
from zsq_onnx.passes.quantizer_nodes import add_static_quantizer
from zsq_onnx.quantizers.common import fake_quantize
from zsq_onnx.quantizers.params import affine_params
from zsq_onnx.recipe import QuantSpec


def _quantizer_model(x: np.ndarray, spec: QuantSpec, per_channel: bool) -> tuple[ir.Model, np.ndarray]:
    source = ir.Value(name="x", shape=ir.Shape(["N", *x.shape[1:]]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="q")
    if spec.symmetric:
        scale, zero_point = weight_params(x, QuantSpec(spec.bits, True, "per_channel" if per_channel else "per_tensor"), axis=1)
    else:
        reduce = (0, 2, 3) if per_channel else None
        scale, zero_point = affine_params(x.min(axis=reduce), x.max(axis=reduce), spec)
    node = add_static_quantizer(graph, source, scale, zero_point, spec, axis=1)
    return one_quantizer_model(graph, node), scale


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [False, True])
def test_ort_equals_torch(bits, symmetric, per_channel):
    x = (np.random.default_rng(bits).standard_normal((4, 6, 5, 5)) * np.linspace(0.1, 3, 6)[None, :, None, None]).astype(np.float32)
    model, scale = _quantizer_model(x, QuantSpec(bits, symmetric), per_channel)
    expected = make_session(model).run(None, {"x": x})[0]
    with torch.no_grad():
        actual = TorchGraph(model)(torch.from_numpy(x)).numpy()
    lsb = np.broadcast_to(scale.reshape(1, -1, 1, 1) if per_channel else scale, x.shape)
    assert np.all(np.abs(actual - expected) <= lsb * 1.0001)
    assert np.mean(actual == expected) > 0.99
    levels = len(np.unique(np.round(expected[:, 0] / lsb[:, 0])))
    assert levels <= 2**bits


def test_straight_through_gradient():
    x = torch.linspace(-2, 2, 50, requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), -8, 7)
    y.sum().backward()
    levels = (x.detach() / 0.1).round()
    inside = (levels >= -8) & (levels <= 7)
    assert torch.all(x.grad[inside] == 1)
    assert torch.all(x.grad[~inside] == 0)
