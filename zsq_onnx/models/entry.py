"""A zoo entry: how a named model is built, its input shape and preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
