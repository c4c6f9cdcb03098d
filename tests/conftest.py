"""Shared fixtures: exported zoo models (built once per session) and the assets folder."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest

ASSETS = Path(os.environ.get("ZSQ_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def randomize_batchnorm(module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (deterministically)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            size = layer.num_features
            layer.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            layer.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
            layer.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread (``pytestmark = pytest.mark.usefixtures(...)``): at
    small inputs it is as fast, and it does not stall (10x and more) when other processes share
    the two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    """(torch module, exported FP32 ONNX, zoo entry) of the embedded digits-cnn."""
    from zsq_onnx.io.export import export_module
    from zsq_onnx.models import get_entry

    entry = get_entry("digits-cnn")
    module = entry.build(None)
    return module, export_module(module, entry.input_shape, entry.preprocessing, entry.name), entry


@pytest.fixture(scope="session")
def resnet20_random():
    """(torch module, exported FP32 ONNX, zoo entry) of a randomly initialised CIFAR ResNet-20."""
    import torch

    from zsq_onnx.io.export import export_module
    from zsq_onnx.models import get_entry

    torch.manual_seed(0)
    entry = get_entry("resnet20-cifar10")
    module = entry.build(None)
    randomize_batchnorm(module)
    return module, export_module(module, entry.input_shape, entry.preprocessing, entry.name), entry


def parse_model(text: str) -> onnx.ModelProto:
    """An ONNX model from ONNX text, checked."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def parse_ir(text: str) -> ir.Model:
    """An IR model from ONNX text, checked: what the stages take."""
    return ir.serde.deserialize_model(parse_model(text))


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The ModelProto of an IR model, for assertions written against protos."""
    return ir.serde.serialize_model(model)
