"""Labelled image datasets: .npz files (``images`` uint8 NHWC, ``labels`` int)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsq_onnx.errors import BadInputError


@dataclass(frozen=True)
class Dataset:
    """Raw images (uint8, NHWC) with integer labels."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, count: int) -> Dataset:
        """The first ``count`` samples."""
        return Dataset(self.images[:count], self.labels[:count], self.name)


def load_dataset(path: str | Path) -> Dataset:
    """Load an .npz dataset with ``images`` [N,H,W,C] (or [N,H,W]) and ``labels`` [N]."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such data file")
    if path.suffix != ".npz":
        raise BadInputError(f"{path}: expected an .npz file with 'images' and 'labels' arrays")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise BadInputError(f"{path}: missing array(s) {', '.join(sorted(missing))}; found {', '.join(archive.files)}")
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise BadInputError(
            f"{path}: expected images [N,H,W,C] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return Dataset(images, labels.astype(np.int64), path.stem)
