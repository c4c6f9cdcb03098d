"""The label-conditioned generator G(z, y) of GDFQ and AdaDFQ, sized from the model's input.

Embedding of y times z, a linear layer to a small feature map, upsampling conv blocks with
BatchNorm and LeakyReLU, and a last conv whose output BatchNorm (without affine parameters)
standardizes per channel; no tanh. The standardized image is mapped into the model's normalized
input space with the input prior of ZeroQ distillation (:func:`zsq_onnx.synth.distill.input_prior`):
natural-image mean and std per channel, clamped to the range real pixels reach.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from zsq_onnx.errors import BadInputError
from zsq_onnx.io import onnx_io

logger = logging.getLogger(__name__)

INIT_SIZE_MAX = 8
WIDTH = 128
WIDTH_MIN = 32
FORMAT = "zsq-onnx generator 1"


def upsampling_steps(size: int) -> int:
    """How many x2 upsampling blocks take the first feature map (at most INIT_SIZE_MAX wide,
    GDFQ's 8 for 32-pixel inputs) to ``size`` or just past it: 2 for 32, 5 for 224 (7 -> 224)."""
    return max(math.ceil(math.log2(size / INIT_SIZE_MAX)), 0)


class ConditionalGenerator(nn.Module):
    """G(z, y): ``latent_dim`` noise and a class label to one input of ``input_shape`` (C, H, W)
    in the model's normalized space; ``prior`` is (mean, std, low, high) per input channel."""

    def __init__(self, input_shape: tuple[int, int, int], classes: int, prior: tuple, latent_dim: int = 100) -> None:
        super().__init__()
        channels, height, width = input_shape
        steps = upsampling_steps(max(height, width))
        self.input_shape, self.classes, self.latent_dim = tuple(input_shape), classes, latent_dim
        self.init_size = (math.ceil(height / 2**steps), math.ceil(width / 2**steps))
        self.label_embedding = nn.Embedding(classes, latent_dim)
        self.project = nn.Linear(latent_dim, WIDTH * self.init_size[0] * self.init_size[1])
        self.project_norm = nn.BatchNorm2d(WIDTH)
        blocks, width_in = [], WIDTH
        for step in range(steps):
            width_out = max(WIDTH >> step, WIDTH_MIN)
            blocks.append(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(width_in, width_out, 3, padding=1), nn.BatchNorm2d(width_out, eps=0.8), nn.LeakyReLU(0.2)))
            width_in = width_out
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(width_in, channels, 3, padding=1)
        self.standardize = nn.BatchNorm2d(channels, affine=False)
        view = (1, channels, 1, 1)
        for name, value in zip(("prior_mean", "prior_std", "low", "high"), prior):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).reshape(view))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Inputs for the model: one per (z, label) row."""
        features = self.project(self.label_embedding(labels) * z).view(len(z), WIDTH, *self.init_size)
        image = self.standardize(self.to_image(self.blocks(self.project_norm(features))))
        if image.shape[-2:] != self.input_shape[1:]:
            image = nn.functional.interpolate(image, size=self.input_shape[1:], mode="bilinear", align_corners=False)
        return torch.maximum(torch.minimum(self.prior_mean + self.prior_std * image, self.high), self.low)

    def sample(self, count: int, generator: torch.Generator, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` noise rows and uniformly drawn labels from the seeded ``generator``."""
        z = torch.randn(count, self.latent_dim, generator=generator).to(device)
        labels = torch.randint(0, self.classes, (count,), generator=generator).to(device)
        return z, labels

    def settings(self) -> dict:
        """What rebuilding this generator needs besides its weights."""
        return {"format": FORMAT, "input_shape": list(self.input_shape), "classes": self.classes, "latent_dim": self.latent_dim}


def save_generator(generator: ConditionalGenerator, path: str | Path) -> Path:
    """Write the generator's weights and shape settings (tensors and plain values only, so
    :func:`load_generator` reads them with ``weights_only=True``), atomically."""
    import io

    buffer = io.BytesIO()
    state = {key: value.detach().cpu() for key, value in generator.state_dict().items()}
    torch.save({"settings": generator.settings(), "state": state}, buffer)
    return onnx_io.write_bytes_atomic(buffer.getvalue(), path)


def load_generator(path: str | Path, input_shape: tuple[int, ...], classes: int) -> ConditionalGenerator:
    """A generator written by :func:`save_generator`, checked against the model it feeds."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such generator file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        settings, state = saved["settings"], saved["state"]
        if settings.get("format") != FORMAT:
            raise ValueError(f"format {settings.get('format')!r}")
        shape, saved_classes, latent_dim = tuple(settings["input_shape"]), int(settings["classes"]), int(settings["latent_dim"])
    except Exception as exc:  # torch.load raises many kinds on foreign or corrupt files
        raise BadInputError(f"{path}: not a generator written by `zsq-onnx synth --synthesizer generator` ({type(exc).__name__}: {exc})") from None
    if shape != tuple(input_shape) or saved_classes != classes:
        raise BadInputError(f"{path}: generates inputs of shape {shape} for {saved_classes} classes; the model takes {tuple(input_shape)} and has {classes}")
    prior = (state["prior_mean"], state["prior_std"], state["low"], state["high"])
    generator = ConditionalGenerator(shape, classes, prior, latent_dim)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise BadInputError(f"{path}: its weights do not fit the generator ({str(exc).splitlines()[0]})") from None
    if not all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()):
        raise BadInputError(f"{path}: holds NaN or inf weights")
    logger.info("%s: generator for %s inputs, %d classes, latent %d", path, shape, classes, latent_dim)
    return generator
