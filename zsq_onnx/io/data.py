"""Labelled image datasets: .npz files (``images`` uint8 NHWC, ``labels`` int) or class folders."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsq_onnx.errors import BadInputError

logger = logging.getLogger(__name__)


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_dataset(path: str | Path, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load an .npz dataset, or a folder of class sub-folders of images (resized to the model's
    ``input_shape`` (C, H, W), grayscale for one channel); images whose size or channel count is
    not the model's are a BadInputError naming the file."""
    path = Path(path)
    dataset = load_image_folder(path, input_shape) if path.is_dir() else load_npz(path)
    if input_shape is not None:
        channels, size = input_shape[0], tuple(input_shape[1:])
        found = tuple(dataset.images.shape[1:3])
        if found != size:
            raise BadInputError(f"{path}: images are {found[0]}x{found[1]} pixels, the model takes {size[0]}x{size[1]}; "
                                "resize them, or give class folders of image files, which are resized on load")
        found_channels = dataset.images.shape[3] if dataset.images.ndim == 4 else 1
        if found_channels != channels:
            raise BadInputError(f"{path}: images have {found_channels} channel(s), the model takes {channels}")
    logger.info("%s: %d images of shape %s, labels %d to %d", path, len(dataset), tuple(dataset.images.shape[1:]), dataset.labels.min(), dataset.labels.max())
    return dataset


def load_image_folder(path: Path, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Images in ``path/<class>/*.png|jpg``, classes in sorted order, as uint8 NHWC: grayscale for
    a one-channel ``input_shape`` (C, H, W), RGB otherwise, resized to its H x W."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    files = [(f, label) for label, folder in enumerate(classes) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BadInputError(f"{path}: expected class sub-folders holding images ({', '.join(IMAGE_SUFFIXES)}), found none")
    mode = "L" if input_shape is not None and input_shape[0] == 1 else "RGB"
    size = tuple(input_shape[1:]) if input_shape is not None else None
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                image = image.convert(mode)
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, np.uint8).reshape(image.size[1], image.size[0], -1))
        except (OSError, UnidentifiedImageError) as exc:
            raise BadInputError(f"{file}: not a readable image ({exc})") from None
    if len({image.shape for image in images}) > 1:
        raise BadInputError(f"{path}: images differ in size; the model's input size is needed to resize them")
    return Dataset(np.stack(images), np.array([label for _, label in files], np.int64), path.name)


def load_npz(path: Path) -> Dataset:
    """Load an .npz dataset with ``images`` [N,H,W,C] (or [N,H,W]) and ``labels`` [N]."""
    if not path.is_file():
        raise BadInputError(f"{path}: no such data file or folder")
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
    if images.size == 0:
        raise BadInputError(f"{path}: holds no images (shape {tuple(images.shape)})")
    if images.dtype.kind not in "uif":
        raise BadInputError(f"{path}: images must be pixel values (uint8 or float), got dtype {images.dtype}")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise BadInputError(f"{path}: images contain NaN or inf values")
    if labels.dtype.kind not in "uif":
        raise BadInputError(f"{path}: labels must be class indices (whole numbers >= 0), got dtype {labels.dtype}")
    wrong = labels[(labels < 0) | (np.floor(labels) != labels)]
    if wrong.size:
        raise BadInputError(f"{path}: labels must be class indices (whole numbers >= 0), got {wrong[0].item()!r}")
    return Dataset(images, labels.astype(np.int64), path.stem)
