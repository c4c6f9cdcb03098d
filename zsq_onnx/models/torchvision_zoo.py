"""torchvision ImageNet backbones as zoo entries, named after torchvision's builders.

``resnet18``, ``resnet50``, ``mobilenet_v2``, ``mobilenet_v3_large`` and ``efficientnet_b0`` are
built by torchvision (the optional extra ``zsq-onnx[torchvision]``) with 1000 classes and no
weights: nothing is downloaded, so each entry needs ``--weights``, a state dict in torchvision's
key names (what torchvision's own checkpoint files hold), loaded strictly and weights-only.
Inputs are 3x224x224 with ImageNet normalization; the modules also run at other sizes (global
pooling before the classifier), which the tests use to stay small.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from zsq_onnx.errors import BadInputError
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.models.entry import ZooEntry
from zsq_onnx.models.weights import load_strictly

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

NAMES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")
INPUT_SHAPE = (3, 224, 224)
PREPROCESSING = Preprocessing(scale=1.0 / 255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
INSTALL_HINT = 'pip install "zsq-onnx[torchvision]"'
# Ops that torchvision registers fake kernels for without checking that its C++ library loaded.
_UNGUARDED_OPS = ("nms", "qnms")
_OP_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _forget_torchvision() -> None:
    for module_name in [key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")]:
        del sys.modules[module_name]


def import_models() -> ModuleType:
    """``torchvision.models``, imported on first use; BadInputError naming the extra when absent.

    The torchvision wheels on PyPI are CUDA builds: beside a CPU-only torch their C++ ops
    (detection ops and image decoding, none of which these classifiers use) cannot load, and
    torchvision's import then fails registering fake kernels for ``nms``/``qnms``. In that case
    the two op schemas are defined here as placeholders (calling them still fails) and the
    import is retried, so the pure-Python model builders work.
    """
    import torch

    try:
        import torchvision.models
    except ImportError:
        raise BadInputError(f"the torchvision zoo models need torchvision: {INSTALL_HINT}") from None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        logger.debug("torchvision's C++ ops did not load (%s); defining placeholder schemas", exc)
        _forget_torchvision()
        for op in _UNGUARDED_OPS:
            torch.library.define(f"torchvision::{op}", _OP_SCHEMA)
        import torchvision.models
    return torchvision.models


def build_module(name: str) -> torch.nn.Module:
    """An untrained torchvision ``name`` (one of NAMES) with 1000 classes, no weights downloaded."""
    if name not in NAMES:
        raise BadInputError(f"{name!r} is not a torchvision zoo model; known: {', '.join(NAMES)}")
    return getattr(import_models(), name)(weights=None, num_classes=1000)


def _builder(name: str):
    def build(weights: Path | None = None) -> torch.nn.Module:
        """torchvision ``name`` with the user's ``weights`` loaded strictly, in eval mode."""
        if weights is None:
            raise BadInputError(f"{name} ships no weights: pass --weights FILE (a torchvision state dict)")
        return load_strictly(build_module(name), Path(weights), name)

    return build


ENTRIES = [
    ZooEntry(name=name, build=_builder(name), input_shape=INPUT_SHAPE, preprocessing=PREPROCESSING, needs_weights=True)
    for name in NAMES
]
