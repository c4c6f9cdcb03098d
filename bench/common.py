"""Helpers shared by the bench scripts: asset paths and the JSON line they end with."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ASSETS = Path(os.environ.get("ZSQ_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
CIFAR_WEIGHTS = {"resnet20-cifar10": "resnet20_cifar10.pt", "resnet32-cifar10": "resnet32_cifar10.pt"}


def asset(relative: str) -> Path:
    """A file under ZSQ_ASSETS; exits with a clear message when it is missing."""
    path = ASSETS / relative
    if not path.exists():
        sys.exit(f"missing asset {path}: set ZSQ_ASSETS to the shared assets folder")
    return path


def cifar_weights(model: str) -> Path:
    """The pretrained weights file of a CIFAR zoo model."""
    if model not in CIFAR_WEIGHTS:
        sys.exit(f"no pretrained weights in the assets for {model}; choose one of {', '.join(CIFAR_WEIGHTS)}")
    return asset(f"models/{CIFAR_WEIGHTS[model]}")


def emit_json(record: dict) -> None:
    """Print the bench's result as one JSON line (the last line of its output)."""
    print(json.dumps(record), flush=True)
