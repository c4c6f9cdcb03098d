"""Accuracy and fidelity metrics over logits and tensors.

Top-1 and top-5 need a classifier's ``(N, classes)`` scores; agreement takes any output with a
class axis 1 (``(N, classes, ...)``: the share of positions whose arg-max matches, per sample)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zsq_onnx.errors import BadInputError


def require_classifier(shape: Sequence[object] | None, where: str) -> None:
    """BadInputError unless ``shape`` (a model output's, batch first) is a classifier's
    (N, classes): labels name one class per sample, so other outputs cannot be scored against
    them. An unknown shape (None) passes; the scores are checked when they exist."""
    if shape is not None and len(shape) != 2:
        dims = ", ".join(str(dim) for dim in list(shape)[1:])
        raise BadInputError(f"{where}: labelled evaluation needs a classifier's (N, classes) output, but the model gives [{dims}] per sample")


def _classifier_scores(logits: np.ndarray) -> np.ndarray:
    """``logits`` when they are (N, classes); BadInputError otherwise."""
    require_classifier(logits.shape, "top-1")
    return logits


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max equals the label."""
    return top1_count(logits, labels) / len(logits)


def top1_count(logits: np.ndarray, labels: np.ndarray) -> int:
    """Samples whose arg-max equals the label (counts over shards add up)."""
    return int((_classifier_scores(logits).argmax(axis=1) == labels).sum())


def top5(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose label is among the five highest logits."""
    return top5_count(logits, labels) / len(logits)


def top5_count(logits: np.ndarray, labels: np.ndarray) -> int:
    """Samples whose label is among the five highest logits."""
    best = np.argsort(-_classifier_scores(logits), axis=1)[:, : min(5, logits.shape[1])]
    return int((best == labels[:, None]).any(axis=1).sum())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples where both models predict the same class (0..1); for outputs with
    more than a class axis, the mean over samples of the share of positions that agree."""
    return agreement_count(reference, candidate) / len(reference)


def agreement_count(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Samples where both models predict the same class, each counted by the share of its
    positions that agree (a whole sample for (N, classes) outputs; sums over shards add up)."""
    if reference.ndim < 2:
        raise BadInputError(f"agreement compares the arg-max over a class axis 1; the model's output has shape {list(reference.shape)}")
    if not len(reference):
        return 0.0
    same = (reference.argmax(axis=1) == candidate.argmax(axis=1)).reshape(len(reference), -1)
    return float(same.mean(axis=1).sum())


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
