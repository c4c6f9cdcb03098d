"""Accuracy and fidelity metrics over logits and tensors."""

from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max equals the label."""
    return float((logits.argmax(axis=1) == labels).mean())


def top5(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose label is among the five highest logits."""
    best = np.argsort(-logits, axis=1)[:, : min(5, logits.shape[1])]
    return float((best == labels[:, None]).any(axis=1).mean())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples where both models predict the same class."""
    return float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean())


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``candidate`` against ``reference``, in dB."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))
