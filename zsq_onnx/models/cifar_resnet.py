"""Classic CIFAR ResNet-20/32/44/56 (3 stages of 16/32/64 channels, option-A shortcuts)."""

from __future__ import annotations

from pathlib import Path

from zsq_onnx.errors import BadInputError
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.models.entry import ZooEntry
from zsq_onnx.models.weights import load_state_dict

PREPROCESSING = Preprocessing(scale=1.0 / 255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DEPTHS = (20, 32, 44, 56)


def build_module(depth: int):
    """An untrained CIFAR ResNet of the given depth (6n+2)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = planes // 4 if (stride != 1 or inplanes != planes) else 0

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
            return F.relu(out + shortcut)

    class CifarResNet(nn.Module):
        def __init__(self, blocks: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            inplanes = 16
            for index, planes in enumerate((16, 32, 64)):
                layers = []
                for block in range(blocks):
                    stride = 2 if (index > 0 and block == 0) else 1
                    layers.append(BasicBlock(inplanes, planes, stride))
                    inplanes = planes
                setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
            self.linear = nn.Linear(64, 10)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = F.adaptive_avg_pool2d(out, 1).flatten(1)
            return self.linear(out)

    if (depth - 2) % 6:
        raise BadInputError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return CifarResNet((depth - 2) // 6)


def _builder(depth: int):
    def build(weights: Path | None = None):
        module = build_module(depth)
        if weights is not None:
            state = load_state_dict(Path(weights))
            try:
                module.load_state_dict(state)
            except RuntimeError as exc:
                raise BadInputError(f"{weights}: does not fit resnet{depth}-cifar10 ({str(exc).splitlines()[0]})") from None
        return module.eval()

    return build


ENTRIES = [
    ZooEntry(
        name=f"resnet{depth}-cifar10",
        build=_builder(depth),
        input_shape=(3, 32, 32),
        preprocessing=PREPROCESSING,
        needs_weights=True,
    )
    for depth in DEPTHS
]
