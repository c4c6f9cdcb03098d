"""CIFAR ResNet zoo entries: export with BN kept, TorchGraph equals the native module, real weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import ASSETS, randomize_batchnorm
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session, run_batched
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.io.export import export_module
from zsq_onnx.models import get_entry
from zsq_onnx.models.cifar_resnet import DEPTHS
from zsq_onnx.pipeline import load_model
from zsq_onnx.validate.metrics import top1


def _assert_equivalent(module, model, shape) -> None:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    native = module(x)
    native.square().sum().backward()
    native_grad, x.grad = x.grad.clone(), None
    ours = TorchGraph(model)(x)
    ours.square().sum().backward()
    assert (native - ours).abs().max().item() <= 1e-4
    assert (native_grad - x.grad).abs().max().item() <= 1e-4


@pytest.mark.parametrize("depth", [pytest.param(depth, marks=pytest.mark.extended) if depth > 32 else depth for depth in DEPTHS])  # deeper: the same blocks, more of them
def test_random_resnet_exports_and_matches(depth):
    torch.manual_seed(depth)
    entry = get_entry(f"resnet{depth}-cifar10")
    module = entry.build(None)
    randomize_batchnorm(module, depth)
    model = export_module(module, entry.input_shape, entry.preprocessing, entry.name)
    assert sum(n.op_type == "BatchNormalization" for n in model.graph) == 1 + 2 * 3 * (depth - 2) // 6
    assert {n.op_type for n in model.graph} <= {"Conv", "BatchNormalization", "Relu", "Add", "Slice", "Pad", "GlobalAveragePool", "Flatten", "Gemm"}
    _assert_equivalent(module, model, entry.input_shape)


def test_weights_with_module_prefix_and_wrapper(tmp_path):
    entry = get_entry("resnet20-cifar10")
    state = entry.build(None).state_dict()
    path = tmp_path / "wrapped.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = entry.build(path).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_weights_of_the_wrong_model_are_bad_input(tmp_path):
    path = tmp_path / "r32.pt"
    torch.save(get_entry("resnet32-cifar10").build(None).state_dict(), path)
    with pytest.raises(BadInputError, match="resnet20"):
        get_entry("resnet20-cifar10").build(path)


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": object()}, path, _use_new_zipfile_serialization=True)
    with pytest.raises(BadInputError, match="weights-only"):
        get_entry("resnet20-cifar10").build(path)


@pytest.mark.parametrize(("name", "expected"), [("resnet20-cifar10", 0.9173), pytest.param("resnet32-cifar10", 0.9263, marks=pytest.mark.extended)])
def test_pretrained_weights_from_assets(name, expected):
    weights = ASSETS / "models" / f"{name.split('-')[0]}_cifar10.pt"
    data = ASSETS / "data" / "cifar10_test.npz"
    if not weights.exists() or not data.exists():
        pytest.skip(f"assets not found under {ASSETS} (set ZSQ_ASSETS)")
    loaded = load_model(name, weights)
    _assert_equivalent(get_entry(name).build(weights), loaded.model, loaded.input_shape)
    with np.load(data) as archive:
        images, labels = archive["images"][::10], archive["labels"][::10]
    accuracy = top1(run_batched(make_session(loaded.model), loaded.preprocessing.apply(images)), labels)
    assert abs(accuracy - expected) < 0.03
