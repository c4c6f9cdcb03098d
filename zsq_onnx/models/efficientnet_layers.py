"""EfficientNet-Lite's torch modules (:mod:`zsq_onnx.models.efficientnet_lite` holds the
family's scaling and zoo entries and imports these only when it builds a module, so the zoo
lists without torch): TensorFlow "SAME" convolutions, the MBConv block and the network, with
lukemelas-style attribute names so that converted checkpoints load strictly."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from zsq_onnx.models.efficientnet_spec import BN_EPS, BN_MOMENTUM, HEAD_CHANNELS, NUM_CLASSES, STEM_CHANNELS, same_padding, stage_plan


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with TensorFlow's reference epsilon and momentum."""
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


def mbconv_blocks(width: float, depth: float, size: int) -> list[MBConv]:
    """The MBConv blocks of the stages scaled by ``width`` and ``depth`` (see
    :func:`~zsq_onnx.models.efficientnet_spec.stage_plan`), padded for the stem's output of
    ``size`` pixels."""
    cin, blocks = STEM_CHANNELS, []
    for repeats, kernel, stride, expand, cout in stage_plan(width, depth):
        for index in range(repeats):
            block_stride = stride if index == 0 else 1
            blocks.append(MBConv(cin, cout, kernel, block_stride, expand, size))
            size, cin = -(-size // block_stride), cout
    return blocks


class EfficientNetLite(nn.Module):
    """Stem (3x3 stride-2 SAME conv), the MBConv stages, 1x1 head conv, global pooling and the
    classifier, for ``image_size`` inputs."""

    def __init__(self, width: float, depth: float, image_size: int) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, image_size)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks = nn.ModuleList(mbconv_blocks(width, depth, -(-image_size // 2)))
        self._conv_head = nn.Conv2d(self._blocks[-1]._project_conv.out_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, x):
        out = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            out = block(out)
        out = F.relu6(self._bn1(self._conv_head(out)))
        return self._fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
