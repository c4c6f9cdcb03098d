"""Input preprocessing (scale, mean, std, layout), stored in ONNX metadata_props under zsq.*."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from zsq_onnx.errors import BadInputError

_KEY = "zsq.preprocessing"


@dataclass(frozen=True)
class Preprocessing:
    """``x = (image * scale - mean[c]) / std[c]``, images given as uint8 NHWC, fed as NCHW float."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Raw NHWC images (uint8 or float) to the model's normalized NCHW float32 input."""
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] != len(self.mean):
            raise BadInputError(
                f"images must be NHWC with {len(self.mean)} channel(s), got shape {tuple(images.shape)}"
            )
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_metadata(self) -> dict[str, str]:
        """metadata_props entries that record this preprocessing."""
        return {_KEY: json.dumps({"scale": self.scale, "mean": list(self.mean), "std": list(self.std), "layout": "NHWC->NCHW"})}

    def write_metadata(self, model) -> None:
        """Record this preprocessing in ``model.metadata_props`` (replacing an earlier record)."""
        kept = [(p.key, p.value) for p in model.metadata_props if p.key != _KEY]
        del model.metadata_props[:]
        for key, value in [*kept, *self.to_metadata().items()]:
            model.metadata_props.add(key=key, value=value)

    @classmethod
    def from_flags(cls, scale: float, mean: str, std: str) -> Preprocessing:
        """From CLI text: ``--input-scale 0.0039 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225``."""
        try:
            means, stds = tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
        except ValueError:
            raise BadInputError(f"--mean and --std take comma-separated numbers, got {mean!r} and {std!r}") from None
        if len(means) != len(stds) or any(v <= 0 for v in stds):
            raise BadInputError(f"--mean and --std need the same number of values and positive stds, got {mean!r} and {std!r}")
        return cls(scale, means, stds)

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> Preprocessing | None:
        """Read it back from metadata_props; None when the model carries none."""
        if _KEY not in props:
            return None
        data = json.loads(props[_KEY])
        return cls(float(data["scale"]), tuple(data["mean"]), tuple(data["std"]))
