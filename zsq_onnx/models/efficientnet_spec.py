"""EfficientNet-Lite's architecture as numbers (pure Python, no torch): EfficientNet-B0's
stages, the variants' compound-scaling coefficients, and TensorFlow's "SAME" padding and
channel/repeat rounding that :mod:`zsq_onnx.models.efficientnet_layers` builds from and
:mod:`zsq_onnx.models.efficientnet_lite` registers (see its docstring for the reference)."""

from __future__ import annotations

import math
from dataclasses import dataclass

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
CHANNEL_DIVISOR = 8
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

@dataclass(frozen=True)
class Variant:
    """One member of the family: its zoo name and compound-scaling coefficients."""

    name: str
    width: float
    depth: float
    image_size: int


VARIANTS = (
    Variant("efficientnet-lite0", 1.0, 1.0, 224),
    Variant("efficientnet-lite1", 1.0, 1.1, 240),
    Variant("efficientnet-lite2", 1.1, 1.2, 260),
    Variant("efficientnet-lite3", 1.2, 1.4, 280),
    Variant("efficientnet-lite4", 1.4, 1.8, 300),
)
DEFAULT = VARIANTS[0]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (begin, end) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def round_filters(channels: int, width: float) -> int:
    """EfficientNet's channel rounding: ``width * channels`` to a multiple of 8, at most 10% down."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def round_repeats(repeats: int, depth: float) -> int:
    """EfficientNet's block count of a stage: ``ceil(depth * repeats)``."""
    return int(math.ceil(depth * repeats))


def stage_plan(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
    """STAGES scaled by ``width`` and ``depth``; the first and last stage's repeats unscaled (Lite)."""
    last = len(STAGES) - 1
    return [
        (repeats if index in (0, last) else round_repeats(repeats, depth), kernel, stride, expand, round_filters(channels, width))
        for index, (repeats, kernel, stride, expand, channels) in enumerate(STAGES)
    ]
