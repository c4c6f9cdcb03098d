"""Input preprocessing (scale, mean, std, layout), stored in ONNX metadata_props under zsq.*."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx.errors import BadInputError

logger = logging.getLogger(__name__)

_KEY = "zsq.preprocessing"


# Per-channel mean and std of natural RGB images as fractions of the pixel range (ImageNet's).
NATURAL_MEAN = (0.485, 0.456, 0.406)
NATURAL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """``x = (image * scale - mean[c]) / std[c]``, images given as uint8 NHWC, fed as NCHW float.

    ``pixel_max`` is the largest raw pixel value (255 for 8-bit images)."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_max: float = 255.0

    def input_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel lowest and highest model input that a raw image in [0, pixel_max] gives."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return -mean / std, (np.float32(self.pixel_max * self.scale) - mean) / std

    def natural_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std that natural images have after this preprocessing (ImageNet's
        pixel statistics; their channel average for other channel counts): what standard
        normalization maps to 0 and 1, and what (x - 127) / 128 maps to means of -0.03 to -0.18
        and stds of about 0.45."""
        channels = len(self.mean)
        natural_mean = np.asarray(NATURAL_MEAN if channels == 3 else [np.mean(NATURAL_MEAN)] * channels, np.float32)
        natural_std = np.asarray(NATURAL_STD if channels == 3 else [np.mean(NATURAL_STD)] * channels, np.float32)
        full = np.float32(self.pixel_max * self.scale)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (natural_mean * full - mean) / std, natural_std * full / std

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Raw NHWC images (uint8 or float) to the model's normalized NCHW float32 input."""
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] != len(self.mean):
            raise BadInputError(
                f"images must be NHWC with {len(self.mean)} channel(s), as the model's preprocessing takes, got shape {tuple(images.shape)}"
            )
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_metadata(self) -> dict[str, str]:
        """metadata_props entries that record this preprocessing."""
        return {_KEY: json.dumps({"scale": self.scale, "mean": list(self.mean), "std": list(self.std), "pixel_max": self.pixel_max, "layout": "NHWC->NCHW"})}

    def write_metadata(self, model: ir.Model) -> None:
        """Record this preprocessing in ``model.metadata_props`` (replacing an earlier record)."""
        logger.debug("recording preprocessing %s in the model's metadata", self)
        model.metadata_props.update(self.to_metadata())

    @classmethod
    def from_flags(cls, scale: float, mean: str, std: str) -> Preprocessing:
        """From CLI text: ``--input-scale 0.0039 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225``."""
        try:
            means, stds = tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
        except ValueError:
            raise BadInputError(f"--mean and --std take comma-separated numbers, got {mean!r} and {std!r}") from None
        if len(means) != len(stds) or not np.isfinite(means).all() or not all(0 < v < np.inf for v in stds):
            raise BadInputError(f"--mean and --std need the same number of values, finite means and positive finite stds, got {mean!r} and {std!r}")
        if not 0 < scale < np.inf:
            raise BadInputError(f"--input-scale must be positive and finite, got {scale}")
        return cls(scale, means, stds)

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> Preprocessing | None:
        """Read it back from metadata_props; None when the model carries none."""
        if _KEY not in props:
            return None
        try:
            data = json.loads(props[_KEY])
            return cls(float(data["scale"]), tuple(data["mean"]), tuple(data["std"]), float(data.get("pixel_max", 255.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"the model's {_KEY} metadata is not a preprocessing record ({type(exc).__name__}: {exc})") from None
