"""Loading trained weights: weights-only state dicts, shared by the zoo models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from zsq_onnx.errors import BadInputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DETAIL_CHARS = 200


def load_state_dict(path: Path) -> dict:
    """A state dict from ``path`` (weights_only); unwraps ``{"state_dict": ...}`` and ``module.``."""
    import pickle

    import torch

    if not path.is_file():
        raise BadInputError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: not a loadable weights-only checkpoint ({first_line})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadInputError(f"{path}: expected a state dict, found {type(state).__name__}")
    logger.info("%s: state dict of %d tensors", path, len(state))
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_strictly(module: torch.nn.Module, path: Path, name: str) -> torch.nn.Module:
    """``module`` with the state dict at ``path`` loaded strictly, in eval mode.

    A state dict that does not fit (missing, unexpected or misshapen keys) is a one-line
    BadInputError naming the file, the model and torch's first complaint, cut to 200 characters.
    """
    try:
        module.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        cut = f"{detail[:DETAIL_CHARS]}{'...' if len(detail) > DETAIL_CHARS else ''}"
        raise BadInputError(f"{path}: does not fit {name} ({cut})") from None
    return module.eval()
