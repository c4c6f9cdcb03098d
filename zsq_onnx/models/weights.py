"""Loading trained weights: weights-only state dicts, shared by the zoo models."""

from __future__ import annotations

from pathlib import Path

from zsq_onnx.errors import BadInputError


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
    return {key.removeprefix("module."): value for key, value in state.items()}
