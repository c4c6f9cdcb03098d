"""The torchvision zoo entries: the user's weights loaded strictly, export with BN kept, TorchGraph
against the native module and ONNX Runtime, and W8A8 end to end.

Random weights stand in for trained ones: every BatchNorm gets non-trivial statistics and every
bias distinct values (trained biases differ; the exporter would merge torchvision's all-zero
initial biases into one shared initializer). The modules pool globally before the classifier, so
the graphs are exported at 32x32 inputs (1x1 before pooling) to keep the suite fast. Tests that
need torchvision skip without the ``torchvision`` extra; the tests of its absence and of missing
weights always run.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import onnx
import pytest
import torch

from tests.conftest import randomize_batchnorm, to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.models import get_entry, torchvision_zoo

SKIP_REASON = 'the torchvision zoo entries need the extra: pip install "zsq-onnx[torchvision]"'
NAMES = torchvision_zoo.NAMES
INPUT_SHAPE = (3, 32, 32)
TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _require_torchvision() -> None:
    """Skip unless torchvision imports. Through the zoo's importer rather than
    ``pytest.importorskip``: beside a CPU-only torch, PyPI's CUDA torchvision wheel fails to
    import with a RuntimeError, which the importer works around and importorskip would not."""
    try:
        torchvision_zoo.import_models()
    except BadInputError:
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Where the random state dicts go; the built modules and exports are dropped afterwards."""
    _require_torchvision()
    yield tmp_path_factory.mktemp("torchvision_weights")
    _exported.cache_clear()
    _random_weights.cache_clear()


@functools.cache
def _random_weights(name: str, directory: Path) -> Path:
    """A state dict of torchvision ``name`` with random BN statistics and biases, saved once."""
    torch.manual_seed(0)
    module = torchvision_zoo.build_module(name)
    randomize_batchnorm(module)
    generator = torch.Generator().manual_seed(1)
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)) and layer.bias is not None:
            layer.bias.data.uniform_(-0.1, 0.1, generator=generator)
    path = directory / f"{name}.pt"
    torch.save(module.state_dict(), path)
    return path


@functools.cache
def _exported(name: str, directory: Path) -> tuple[torch.nn.Module, onnx.ModelProto]:
    """(native module built by the zoo entry from the random weights, its export at INPUT_SHAPE)."""
    from zsq_onnx.io.export import export_module

    entry = get_entry(name)
    module = entry.build(_random_weights(name, directory)).requires_grad_(False)
    return module, export_module(module, INPUT_SHAPE, entry.preprocessing, name)


@pytest.mark.parametrize("name", NAMES)
def test_entry_needs_weights_and_records_imagenet_preprocessing(name):
    from zsq_onnx.pipeline import load_model

    entry = get_entry(name)
    assert entry.needs_weights and entry.input_shape == (3, 224, 224)
    assert entry.preprocessing.scale == pytest.approx(1 / 255)
    assert entry.preprocessing.mean == (0.485, 0.456, 0.406) and entry.preprocessing.std == (0.229, 0.224, 0.225)
    with pytest.raises(BadInputError, match="--weights"):
        entry.build(None)
    with pytest.raises(BadInputError, match="--weights"):
        load_model(name)


def test_missing_torchvision_is_bad_input_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    path = tmp_path / "weights.pt"
    torch.save({}, path)
    with pytest.raises(BadInputError, match=r"zsq-onnx\[torchvision\]") as caught:
        get_entry("resnet18").build(path)
    assert "\n" not in str(caught.value)


def test_weights_load_strictly_and_misfits_are_bad_input(weights_dir):
    path = _random_weights("resnet18", weights_dir)
    module = get_entry("resnet18").build(path)
    assert not module.training
    assert torch.equal(module.state_dict()["bn1.running_var"], torch.load(path, weights_only=True)["bn1.running_var"])
    with pytest.raises(BadInputError, match="does not fit resnet50") as caught:
        get_entry("resnet50").build(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_torch_graph_matches_native_and_onnxruntime(name, weights_dir):
    """Forward and input gradient against the native module, forward against ORT, BN kept."""
    from zsq_onnx.executors.runtime import make_session
    from zsq_onnx.executors.torch_graph import TorchGraph

    native, model = _exported(name, weights_dir)
    batchnorms = sum(node.op_type == "BatchNormalization" for node in model.graph)
    assert batchnorms == sum(isinstance(m, torch.nn.BatchNorm2d) for m in native.modules())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, *INPUT_SHAPE, generator=generator)
    x_native, x_graph = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    logits_native, logits_graph = native(x_native), TorchGraph(model)(x_graph)
    projection = torch.randn(logits_native.shape, generator=generator)
    (logits_native * projection).sum().backward()
    (logits_graph * projection).sum().backward()
    scale = max(logits_native.abs().max().item(), 1.0)
    assert (logits_native - logits_graph).abs().max().item() <= TOLERANCE * scale
    assert (x_native.grad - x_graph.grad).abs().max().item() <= TOLERANCE * max(x_native.grad.abs().max().item(), 1.0)
    session = make_session(model)
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert (logits_graph.detach() - torch.from_numpy(expected)).abs().max().item() <= TOLERANCE * scale


@pytest.mark.extended
@pytest.mark.parametrize(
    ("name", "profile"),
    [*((name, "ort-cpu") for name in NAMES), ("mobilenet_v3_large", "sim")],
)
def test_w8a8_converts_end_to_end(name, profile, weights_dir, tmp_path):
    """Data-free W8A8 with tiny synthesis: every weighted layer quantized, the model runs in ORT."""
    from zsq_onnx import Recipe
    from zsq_onnx.pipeline import convert
    from zsq_onnx.profiles import PROFILES
    from zsq_onnx.recipe import SynthConfig

    _, model = _exported(name, weights_dir)
    source = tmp_path / f"{name}.onnx"
    onnx.save(to_proto(model), source)
    recipe = Recipe(synth=SynthConfig(samples=2, steps=2, batch_size=2), profile=PROFILES[profile])
    result = convert(source, tmp_path / f"{name}_w8a8.onnx", recipe, progress=False)
    assert result.report["float_layers"] == []
    assert any(node.op_type == "QuantizeLinear" for node in result.model.graph)
    assert result.evaluation.output_sqnr_db >= 15.0
