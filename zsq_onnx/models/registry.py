"""Registry of zoo models by name; each entry builds a torch module with its preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zsq_onnx.errors import BadInputError
from zsq_onnx.io.preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch

    from zsq_onnx.io.data import Dataset


@dataclass(frozen=True)
class ZooEntry:
    """A named model: how to build it (with weights), its input shape and preprocessing."""

    name: str
    build: Callable[[Path | None], torch.nn.Module]
    input_shape: tuple[int, int, int]
    preprocessing: Preprocessing
    default_eval_data: Callable[[], Dataset] | None = None
    needs_weights: bool = False


def _entries() -> dict[str, ZooEntry]:
    from zsq_onnx.models import cifar_resnet, digits_cnn, efficientnet_lite, torchvision_zoo

    entries = [digits_cnn.ENTRY, *cifar_resnet.ENTRIES, *efficientnet_lite.ENTRIES, *torchvision_zoo.ENTRIES]
    return {entry.name: entry for entry in entries}


def zoo_names() -> list[str]:
    """Names of every zoo model."""
    return sorted(_entries())


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; a bad name is a BadInputError listing the known ones."""
    entries = _entries()
    if name not in entries:
        raise BadInputError(
            f"{name!r} is neither an .onnx file nor a zoo model; zoo models: {', '.join(sorted(entries))}"
        )
    return entries[name]
