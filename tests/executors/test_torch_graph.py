"""TorchGraph runs exported graphs exactly like the native torch module, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import parse_ir
from zsq_onnx.errors import UnsupportedOpError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph


def _compare(module, model, shape, batch=8):
    graph = TorchGraph(model)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    native = module(x)
    (native * torch.arange(native.shape[1])).sum().backward()
    native_grad = x.grad.clone()
    x.grad = None
    ours = graph(x)
    (ours * torch.arange(ours.shape[1])).sum().backward()
    assert (native - ours).abs().max().item() <= 1e-4
    assert (native_grad - x.grad).abs().max().item() <= 1e-4


def test_digits_cnn_matches_native(digits):
    module, model, entry = digits
    _compare(module, model, entry.input_shape)


def test_random_resnet20_matches_native(resnet20_random):
    module, model, entry = resnet20_random
    _compare(module, model, entry.input_shape)


def test_torch_graph_matches_onnxruntime(resnet20_random):
    _, model, entry = resnet20_random
    x = np.random.default_rng(0).standard_normal((4, *entry.input_shape)).astype(np.float32)
    expected = make_session(model).run(None, {"input": x})[0]
    with torch.no_grad():
        actual = TorchGraph(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_unsupported_op_names_op_and_node():
    model = parse_ir(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Erf (x) }
        """
    )
    model.graph.node(0).name = "my_erf"
    with pytest.raises(UnsupportedOpError, match=r"Erf.*my_erf"):
        TorchGraph(model)


def test_write_back_round_trip(digits):
    _, model, _ = digits
    graph = TorchGraph(model, trainable=True)
    name = next(iter(model.graph.initializers))
    with torch.no_grad():
        graph.parameter(name).mul_(2.0)
    written = graph.write_back(model)
    original = model.graph.initializers[name].const_value.numpy()
    updated = written.graph.initializers[name].const_value.numpy()
    np.testing.assert_array_equal(updated, original * 2.0)
    again = TorchGraph(written)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(again(x).numpy(), graph(x).numpy(), atol=1e-6)


def test_run_returns_intermediate_values(digits):
    _, model, _ = digits
    graph = TorchGraph(model)
    bn_input = next(n.inputs[0].name for n in model.graph if n.op_type == "BatchNormalization")
    values = graph.run({"input": torch.randn(2, 1, 8, 8)}, outputs=[bn_input])
    assert list(values) == [bn_input]
    assert values[bn_input].shape == (2, 16, 8, 8)


def test_run_from_a_fed_intermediate_value_runs_only_what_follows(digits):
    """Feeding an intermediate value runs the nodes after it alone (no graph input needed), as
    the whole graph computes them; a fed value is never overwritten by its producer."""
    _, model, _ = digits
    graph = TorchGraph(model)
    relus = [n.outputs[0].name for n in model.graph if n.op_type == "Relu"]
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = graph.run({"input": x}, [relus[0], graph.output_names[0]])
        tail = graph.run({relus[0]: whole[relus[0]]}, [graph.output_names[0]])
        torch.testing.assert_close(tail[graph.output_names[0]], whole[graph.output_names[0]])
        zeros = graph.run({"input": x, relus[0]: torch.zeros_like(whole[relus[0]])}, [relus[0], graph.output_names[0]])
    assert not zeros[relus[0]].any()
    assert not torch.allclose(zeros[graph.output_names[0]], whole[graph.output_names[0]])
    assert graph.run({"input": x})[graph.output_names[0]].shape == whole[graph.output_names[0]].shape


def test_run_after_replaces_a_value_given_its_node_inputs(digits):
    _, model, _ = digits
    graph = TorchGraph(model)
    relu = next(n for n in model.graph if n.op_type == "Relu")
    name, source = relu.outputs[0].name, relu.inputs[0].name
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        values = graph.run({"input": x}, [name, source], after={name: lambda value, inputs: inputs[0] * 2})
    torch.testing.assert_close(values[name], values[source] * 2)
