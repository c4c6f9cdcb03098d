"""The adaptive (ASQ) quantizer: ORT equals torch within one step, and the adapter trains."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from tests.quantizers.graphs import one_quantizer_model
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.quantizers.adaptive import ADAPTIVE, adaptive_quantize


def _adaptive_model(x: np.ndarray, bits: int, rng: np.random.Generator) -> ir.Model:
    channels = x.shape[1]
    source = ir.Value(name="x", shape=ir.Shape(["N", *x.shape[1:]]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([source], [], nodes=[], name="g")
    inputs = [
        new_initializer(graph, "scale", np.array(float(x.max() - x.min()) / (2**bits - 1), np.float32)),
        new_initializer(graph, "zero_point", np.array(round(-x.min() / (float(x.max() - x.min()) / (2**bits - 1)))), ir.DataType.UINT8),
        new_initializer(graph, "qmin", np.array(0), ir.DataType.UINT8),
        new_initializer(graph, "qmax", np.array(2**bits - 1), ir.DataType.UINT8),
        new_initializer(graph, "down_weight", rng.standard_normal((2, channels)).astype(np.float32)),
        new_initializer(graph, "down_bias", np.full(2, 0.5, np.float32)),
        new_initializer(graph, "up_weight", rng.uniform(0.1, 0.3, (1, 2)).astype(np.float32)),
        new_initializer(graph, "up_bias", np.ones(1, np.float32)),
    ]
    node = ADAPTIVE.make_node({"x": source, **{value.name: value for value in inputs}}, name="q")
    node.outputs[0].name, node.outputs[0].type, node.outputs[0].shape = "y", ir.TensorType(ir.DataType.FLOAT), source.shape
    return one_quantizer_model(graph, node)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_adaptive_quantizer_ort_equals_torch_within_one_lsb(bits):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((6, 8, 5, 5)) * rng.uniform(0.2, 3, (6, 1, 1, 1))).astype(np.float32)
    model = _adaptive_model(x, bits, rng)
    actual = make_session(model).run(None, {"x": x})[0]
    graph = TorchGraph(model)
    with torch.no_grad():
        expected = graph(torch.from_numpy(x)).numpy()
        weights = {name: graph.parameter(name) for name in ("down_weight", "down_bias", "up_weight", "up_bias")}
        beta = torch.relu(torch.relu(torch.from_numpy(x).mean((2, 3)) @ weights["down_weight"].T + weights["down_bias"]) @ weights["up_weight"].T + weights["up_bias"])
    step = (graph.parameter("scale") * beta.reshape(-1)).numpy().reshape(-1, 1, 1, 1)
    assert len(np.unique(step)) > 1, "the adapter gives each sample its own step"
    assert np.all(np.abs(actual - expected) <= step * 1.001)
    assert np.mean(np.abs(actual - expected) <= step * 1e-3) > 0.99, "steps differ only by float rounding of the adapter"
    assert np.all(np.round(actual / step) - np.round(actual / step).min(axis=(1, 2, 3), keepdims=True) <= 2**bits - 1)


def test_adaptive_quantizer_trains_its_adapter():
    x = torch.randn(4, 8, 3, 3)
    down_weight = torch.randn(2, 8, requires_grad=True)
    up_weight = torch.zeros(1, 2, requires_grad=True)
    y = adaptive_quantize(x, torch.tensor(0.1), torch.tensor(8), 0, 15, down_weight, torch.zeros(2), up_weight, torch.ones(1))
    ((y - 2 * x) ** 2).sum().backward()
    assert up_weight.grad.abs().sum() > 0
