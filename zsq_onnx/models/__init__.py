"""Model zoo: a registry of named models that export to ONNX with BatchNorm kept."""

from zsq_onnx.models.entry import ZooEntry
from zsq_onnx.models.registry import get_entry, zoo_names

__all__ = ["ZooEntry", "get_entry", "zoo_names"]
