"""Scales and zero points from ranges (numpy only): symmetric and affine, safe on zero ranges."""

from __future__ import annotations

import numpy as np

from zsq_onnx.quantizers.spec import QuantSpec


def symmetric_params(absmax: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Scale = absmax / qmax, zero point 0; a zero-range channel gets scale 1 (it is exactly 0)."""
    absmax = np.asarray(absmax, np.float32)
    scale = absmax / np.float32(spec.qmax)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return scale, np.zeros(scale.shape, np.int64)


def affine_params(low: np.ndarray, high: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that map [min(low,0), max(high,0)] onto [qmin, qmax]."""
    low = np.minimum(np.asarray(low, np.float32), 0)
    high = np.maximum(np.asarray(high, np.float32), 0)
    scale = (high - low) / np.float32(spec.qmax - spec.qmin)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zero_point = np.clip(np.round(spec.qmin - low / scale), spec.qmin, spec.qmax).astype(np.int64)
    return scale, zero_point


def range_params(low: np.ndarray, high: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric or affine parameters for the range [low, high], as ``spec`` asks."""
    if spec.symmetric:
        return symmetric_params(np.maximum(np.abs(low), np.abs(high)), spec)
    return affine_params(low, high, spec)


CLIP_RATIOS = np.linspace(1.0, 0.2, 81, dtype=np.float32)


def on_grid(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """``values`` rounded (half to even, as QuantizeLinear) onto the integer levels [qmin, qmax]
    of ``scale`` and ``zero_point`` (broadcast against them) and back, as QuantizeLinear ->
    (Clip) -> DequantizeLinear compute it."""
    return (np.clip(np.rint(values / scale) + zero_point, qmin, qmax) - zero_point) * scale


def least_error_params(rows: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows`` [channels, values], the parameters of the range [r min, r max] with
    the least squared rounding error over the ratios r of :data:`CLIP_RATIOS` (1 first, so a tie
    keeps min/max)."""
    low, high = rows.min(axis=1), rows.max(axis=1)
    best_error = np.full(len(rows), np.inf, np.float32)
    best_ratio = np.ones(len(rows), np.float32)
    for ratio in CLIP_RATIOS:
        scale, zero_point = range_params(low * ratio, high * ratio, spec)
        error = np.square(on_grid(rows, scale[:, None], zero_point[:, None], spec.qmin, spec.qmax) - rows).sum(axis=1)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_ratio = np.where(better, ratio, best_ratio)
    return range_params(low * best_ratio, high * best_ratio, spec)
