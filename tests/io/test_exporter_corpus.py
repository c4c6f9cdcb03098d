"""The files torch's two exporters write, converted as a user's .onnx files (issue 25).

The corpus is exported once per session at 32x32 from torchvision's resnet18, mobilenet_v2 and
mobilenet_v3_large (random weights, 10 classes) and the CIFAR ResNet-20 (its real weights when the
assets are here): the legacy exporter with ``do_constant_folding=False`` at opsets 11, 13, 15 and
17, the dynamo exporter with ``optimize=False`` at opset 20, with fixed and dynamic batch sizes.
Each file of the profile test converts with every profile and loads in ORT with the shapes the file
declared. Calibration uses two Gaussian samples without bias correction: what is checked is the
graph, not its accuracy; the ResNet-20 test measures that on real images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from tests.conftest import ASSETS, randomize_batchnorm
from zsq_onnx.errors import BadInputError
from zsq_onnx.io.foreign import restore_interface
from zsq_onnx.pipeline import load_model, quantize
from zsq_onnx.profiles import PROFILES, emit
from zsq_onnx.recipe import build_recipe

SIZE = 32
RESNET20_WEIGHTS = ASSETS / "models" / "resnet20_cifar10.pt"
CIFAR = ASSETS / "data" / "cifar10_test.npz"
EVAL_IMAGES = 1000


class Case(NamedTuple):
    """One exported file: model, exporter (legacy or dynamo), opset, batch (0: dynamic)."""

    model: str
    exporter: str
    opset: int
    batch: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.exporter}{self.opset}-" + (f"batch{self.batch}" if self.batch else "dynamic")


RESNET20 = [Case("resnet20", "legacy", 11, 0), Case("resnet20", "legacy", 13, 0), Case("resnet20", "legacy", 15, 4),
            Case("resnet20", "legacy", 17, 0), Case("resnet20", "dynamo", 20, 0)]
TORCHVISION = [Case("resnet18", "legacy", 13, 1), Case("mobilenet_v2", "dynamo", 20, 2), Case("mobilenet_v3_large", "legacy", 17, 0)]
PROFILE_CASES = [RESNET20[0], RESNET20[2], RESNET20[4], *TORCHVISION]


def _module(name: str):
    import torch

    if name == "resnet20":
        from zsq_onnx.models import get_entry

        entry = get_entry("resnet20-cifar10")
        if RESNET20_WEIGHTS.exists():
            return entry.build(RESNET20_WEIGHTS).eval()
        torch.manual_seed(0)
        module = entry.build(None)
    else:
        from zsq_onnx.models import torchvision_zoo

        try:
            models = torchvision_zoo.import_models()
        except BadInputError:
            pytest.skip('the torchvision models need the extra: pip install "zsq-onnx[torchvision]"')
        torch.manual_seed(0)
        module = getattr(models, name)(num_classes=10)
    randomize_batchnorm(module)
    return module.eval()


def _export(module, case: Case, path: Path) -> None:
    import torch

    example = (torch.randn(case.batch or 2, 3, SIZE, SIZE),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.exporter == "legacy":
            dynamic = None if case.batch else {"x": {0: "n"}, "y": {0: "n"}}
            torch.onnx.export(module, example, path, dynamo=False, opset_version=case.opset, do_constant_folding=False,
                              input_names=["x"], output_names=["y"], dynamic_axes=dynamic)
        else:
            dynamic = None if case.batch else ({0: torch.export.Dim("n")},)
            torch.onnx.export(module, example, path, dynamo=True, optimize=False, opset_version=case.opset, dynamic_shapes=dynamic, verbose=False)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[Case, Path]:
    """Every file of the corpus, exported once per session."""
    folder = tmp_path_factory.mktemp("corpus")
    modules: dict[str, object] = {}
    files = {}
    for case in (*RESNET20, *TORCHVISION):
        module = modules.setdefault(case.model, _module(case.model))
        files[case] = folder / f"{case.name}.onnx"
        _export(module, case, files[case])
    return files


def _declared(path: Path) -> list[list]:
    model = onnx.load(path, load_external_data=False)
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)]


def _session(model: ir.Model) -> ort.InferenceSession:
    return ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("case", PROFILE_CASES, ids=lambda case: case.name)
def test_exported_file_converts_with_every_profile_and_keeps_its_shapes(corpus, case):
    path = corpus[case]
    loaded = load_model(path)
    declared = _declared(path)
    assert isinstance(declared[0][0], int) == bool(case.batch)
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    batch = case.batch or 3
    for profile in PROFILES:
        emitted = restore_interface(emit(quantize(loaded.model, [x], build_recipe(profile=profile, bias_correction=False))))
        assert emitted.opset_imports[""] == 21
        proto = ir.serde.serialize_model(emitted)
        onnx.checker.check_model(proto, full_check=True)
        assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*proto.graph.input, *proto.graph.output)] == declared
        logits = _session(emitted).run(None, {emitted.graph.inputs[0].name: np.resize(x, (batch, 3, SIZE, SIZE))})[0]
        assert logits.shape == (batch, 10) and np.isfinite(logits).all(), profile


def _top1(model: ir.Model, images: np.ndarray, labels: np.ndarray) -> float:
    session = _session(model)
    name = session.get_inputs()[0].name
    predictions = np.concatenate([session.run(None, {name: images[i : i + 500]})[0].argmax(axis=1) for i in range(0, len(images), 500)])
    return 100.0 * float((predictions == labels).mean())


@pytest.mark.slow
def test_resnet20_file_of_every_opset_scores_as_the_zoo_model(corpus):
    """W8A8 ort-cpu of each exported ResNet-20 file within 0.1 point of the zoo model's on 1,000
    CIFAR-10 test images. For the suite's time: 1,000 images (2,000 in the issue), no bias
    correction, and both calibrated on the same 32 other test images, so that the graphs are
    compared, not two distillations. FP32 outputs agree too."""
    if not RESNET20_WEIGHTS.exists() or not CIFAR.exists():
        pytest.skip(f"ResNet-20 weights or CIFAR-10 not found under {ASSETS} (set ZSQ_ASSETS)")
    zoo = load_model("resnet20-cifar10", RESNET20_WEIGHTS)
    data = np.load(CIFAR)
    images, labels = zoo.preprocessing.apply(data["images"][:EVAL_IMAGES]), data["labels"][:EVAL_IMAGES]
    calibration = [zoo.preprocessing.apply(data["images"][-32:])]
    recipe = build_recipe(profile="ort-cpu", bias_correction=False)
    reference = _top1(emit(quantize(zoo.model, calibration, recipe)), images, labels)
    assert reference > 85.0
    for case in RESNET20:
        foreign = load_model(corpus[case])
        np.testing.assert_allclose(_session(foreign.model).run(None, {foreign.model.graph.inputs[0].name: images[:8]})[0],
                                   _session(zoo.model).run(None, {zoo.model.graph.inputs[0].name: images[:8]})[0], rtol=1e-4, atol=1e-4)
        assert abs(_top1(emit(quantize(foreign.model, calibration, recipe)), images, labels) - reference) <= 0.1, case.name
