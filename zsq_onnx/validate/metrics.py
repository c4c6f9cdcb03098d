"""Accuracy and fidelity metrics over logits and tensors."""

from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max equals the label."""
    return top1_count(logits, labels) / len(logits)


def top1_count(logits: np.ndarray, labels: np.ndarray) -> int:
    """Samples whose arg-max equals the label (counts over shards add up)."""
    return int((logits.argmax(axis=1) == labels).sum())


def top5(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose label is among the five highest logits."""
    return top5_count(logits, labels) / len(logits)


def top5_count(logits: np.ndarray, labels: np.ndarray) -> int:
    """Samples whose label is among the five highest logits."""
    best = np.argsort(-logits, axis=1)[:, : min(5, logits.shape[1])]
    return int((best == labels[:, None]).any(axis=1).sum())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples where both models predict the same class."""
    return agreement_count(reference, candidate) / len(reference)


def agreement_count(reference: np.ndarray, candidate: np.ndarray) -> int:
    """Samples where both models predict the same class."""
    return int((reference.argmax(axis=1) == candidate.argmax(axis=1)).sum())


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``candidate`` against ``reference``, in dB."""
    return power_ratio_db(*signal_and_noise(reference, candidate))


def signal_and_noise(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Summed power of ``reference`` and of ``candidate - reference`` (sums over batches add up)."""
    reference = reference.astype(np.float64)
    return float(np.sum(reference**2)), float(np.sum((reference - candidate) ** 2))


def power_ratio_db(signal: float, noise: float) -> float:
    """``signal / noise`` in dB; infinite without noise."""
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))
