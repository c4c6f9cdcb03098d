"""Registry of zoo models by name; each entry builds a torch module with its preprocessing."""

from __future__ import annotations

from zsq_onnx.errors import BadInputError
from zsq_onnx.models import cifar_resnet, digits_cnn, efficientnet_lite, torchvision_zoo
from zsq_onnx.models.entry import ZooEntry


def _entries() -> dict[str, ZooEntry]:
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
