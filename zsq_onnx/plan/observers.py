"""Calibration observers: the range a static activation quantizer covers, chosen from the values
the calibration data produced (numpy only).

| method | range |
|---|---|
| ``minmax`` | the smallest and largest value seen (nothing is clipped) |
| ``percentile`` | the ``percentile`` of |x| (symmetric quantizers), or the lower and upper percentiles (asymmetric) |
| ``mse`` | the clipping range whose quantization (at the quantizer's bits and symmetry) has the least mean squared error, as NNCF and TensorRT search it |
| ``entropy`` | TensorRT's KL calibration: the range whose quantized histogram diverges least from the clipped one |

Every method but minmax reads a :class:`Histogram` of equal bins over a range fixed in advance
(the min/max of a first pass), so batches add their counts and streaming over batches equals one
histogram of all values. Symmetric quantizers histogram x on [-max |x|, max |x|] with
2 x ``HISTOGRAM_BINS`` bins, which fold exactly into ``HISTOGRAM_BINS`` bins of |x| for the
percentile and entropy; asymmetric ones on [min(x, 0), max(x, 0)] (the range an affine
quantizer always covers) with ``HISTOGRAM_BINS`` bins. Searches (mse, entropy) of asymmetric
ranges shrink both ends toward 0 by the same factor: on ReLU outputs (min 0) that is a search
over the upper end alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsq_onnx.errors import InternalError
from zsq_onnx.quantizers.params import on_grid, range_params
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import DEFAULT_PERCENTILE, CalibrationMethod

HISTOGRAM_BINS = 2048
_CANDIDATE_CHUNK = 128


@dataclass
class Histogram:
    """Counts of values in equal bins over the fixed range [low, high]; values outside it (there
    are none when the range came from a min/max pass over the same data) go to the end bins."""

    low: float
    high: float
    counts: np.ndarray

    @classmethod
    def empty(cls, low: float, high: float, bins: int = HISTOGRAM_BINS) -> Histogram:
        """A histogram with no counts yet."""
        return cls(float(low), float(high), np.zeros(bins, np.int64))

    @classmethod
    def for_spec(cls, low: float, high: float, spec: QuantSpec, bins: int = HISTOGRAM_BINS) -> Histogram:
        """The histogram a quantizer of ``spec`` observes for values within [low, high]:
        symmetric about 0 with 2 x ``bins`` bins, or over [min(low, 0), max(high, 0)]."""
        if spec.symmetric:
            bound = max(abs(low), abs(high))
            return cls.empty(-bound, bound, 2 * bins)
        return cls.empty(min(low, 0.0), max(high, 0.0), bins)

    @property
    def degenerate(self) -> bool:
        """True when the range is empty (every value equal): there is nothing to search."""
        return not self.high > self.low

    @property
    def edges(self) -> np.ndarray:
        """The bins' edges, ``len(counts) + 1`` of them."""
        return np.linspace(self.low, self.high, len(self.counts) + 1)

    @property
    def total(self) -> int:
        """How many values were added."""
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (any shape) into the bins."""
        if self.degenerate:
            self.counts[0] += values.size
            return
        scaled = (np.asarray(values, np.float32).ravel() - np.float32(self.low)) * np.float32(len(self.counts) / (self.high - self.low))
        index = np.clip(scaled.astype(np.int64), 0, len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))

    def mass_below(self, value: float) -> float:
        """Fraction of the values below ``value``, counts spread evenly within each bin."""
        if self.total == 0 or self.degenerate:
            return 0.0 if value <= self.low else 1.0
        position = np.clip((value - self.low) / (self.high - self.low) * len(self.counts), 0, len(self.counts))
        whole = int(position)
        partial = self.counts[whole] * (position - whole) if whole < len(self.counts) else 0.0
        return float((self.counts[:whole].sum() + partial) / self.total)

    def fraction_outside(self, low: float, high: float) -> float:
        """Fraction of the values outside [low, high]."""
        return self.mass_below(low) + 1.0 - self.mass_below(high)


def magnitudes(histogram: Histogram) -> Histogram:
    """The |x| histogram on [0, high] of a histogram symmetric about 0 with an even bin count."""
    half = len(histogram.counts) // 2
    if histogram.low != -histogram.high or 2 * half != len(histogram.counts):
        raise InternalError(f"folding needs a range symmetric about 0 and an even bin count, got [{histogram.low}, {histogram.high}] in {len(histogram.counts)} bins")
    return Histogram(0.0, histogram.high, histogram.counts[half:] + histogram.counts[:half][::-1])


def quantile(histogram: Histogram, fraction: float) -> float:
    """The value below which ``fraction`` of the counts lie, interpolated linearly within its bin."""
    if histogram.total == 0 or histogram.degenerate:
        return histogram.low if fraction <= 0 else histogram.high
    cumulative = np.cumsum(histogram.counts)
    target = fraction * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, target, side="left")), len(cumulative) - 1)
    before = cumulative[index - 1] if index > 0 else 0
    inside = (target - before) / histogram.counts[index] if histogram.counts[index] else 0.0
    width = (histogram.high - histogram.low) / len(histogram.counts)
    return float(histogram.low + (index + min(max(inside, 0.0), 1.0)) * width)


def percentile_range(histogram: Histogram, spec: QuantSpec, percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """The ``percentile`` of |x| as a symmetric range, or the (100 - p, p) percentiles of x."""
    if spec.symmetric:
        bound = quantile(magnitudes(histogram), percentile / 100)
        return -bound, bound
    return quantile(histogram, 1 - percentile / 100), quantile(histogram, percentile / 100)


def _candidates(histogram: Histogram, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ranges (lows, highs) at bin edges: [-t, t] for every edge t > 0 of a symmetric
    histogram, [a low, a high] with a = k / bins for an asymmetric one."""
    steps = len(histogram.counts) // 2 if spec.symmetric else len(histogram.counts)
    factors = np.arange(1, steps + 1) / steps
    return factors * histogram.low, factors * histogram.high


def _fake_quantize(values: np.ndarray, low: np.ndarray, high: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """``values`` (a row) quantized with the parameters of each candidate range (a column each),
    the same scales and zero points QuantizeActivationsPass derives from a range."""
    scale, zero_point = range_params(low, high, spec)
    return on_grid(values, scale[:, None].astype(np.float64), zero_point[:, None], spec.qmin, spec.qmax)


def mse_range(histogram: Histogram, spec: QuantSpec) -> tuple[float, float]:
    """The candidate range (every bin edge) whose quantization at ``spec`` (its bits, symmetry and
    integer range) has the least squared error over the bin centres, weighted by their counts."""
    if histogram.total == 0 or histogram.degenerate:
        return histogram.low, histogram.high
    edges = histogram.edges
    centres = (edges[:-1] + edges[1:]) / 2
    lows, highs = _candidates(histogram, spec)
    errors = np.empty(len(highs))
    for start in range(0, len(highs), _CANDIDATE_CHUNK):
        part = slice(start, start + _CANDIDATE_CHUNK)
        quantized = _fake_quantize(centres, lows[part], highs[part], spec)
        errors[part] = ((quantized - centres) ** 2) @ histogram.counts
    best = int(np.argmin(errors))
    return float(lows[best]), float(highs[best])


def _kl_divergence(counts: np.ndarray, start: int, stop: int, levels: int) -> float:
    """TensorRT's divergence for the window [start, stop) of ``counts``: P is the window with the
    counts outside it added to its end bins; Q merges the window's own counts into ``levels``
    near-equal groups of bins and spreads each group's sum evenly over its non-empty bins."""
    window = counts[start:stop].astype(np.float64)
    reference = window.copy()
    reference[0] += counts[:start].sum()
    reference[-1] += counts[stop:].sum()
    size = stop - start
    group_of_bin = np.arange(size) * levels // size
    starts = np.searchsorted(group_of_bin, np.arange(levels))
    occupied = window > 0
    spread = np.add.reduceat(window, starts) / np.maximum(np.add.reduceat(occupied.astype(np.float64), starts), 1)
    expanded = np.where(occupied, spread[group_of_bin], 0.0)
    keep = reference > 0
    if (expanded[keep] <= 0).any():
        return float("inf")
    p = reference[keep] / reference.sum()
    q = expanded[keep] / expanded.sum()
    return float(np.sum(p * np.log(p / q)))


def entropy_range(histogram: Histogram, spec: QuantSpec) -> tuple[float, float]:
    """TensorRT's entropy calibration: among windows growing from 0 that span at least as many
    bins as the quantizer has levels on that side (qmax + 1 on |x| for symmetric quantizers, 2^bits
    on x for asymmetric ones), the one of least KL divergence (the widest on ties). As TensorRT
    does, the bin holding 0 takes its neighbour's count first: a spike of exact zeros (ReLU
    outputs) is represented exactly by any range and would otherwise dominate the divergence."""
    if histogram.total == 0 or histogram.degenerate:
        return histogram.low, histogram.high
    observed = magnitudes(histogram) if spec.symmetric else histogram
    bins = len(observed.counts)
    levels = spec.qmax + 1 if spec.symmetric else spec.qmax - spec.qmin + 1
    if bins <= levels:
        return histogram.low, histogram.high
    zero = int(round(-observed.low / (observed.high - observed.low) * bins))
    counts = observed.counts.copy()
    zero_bin = min(zero, bins - 1)
    counts[zero_bin] = counts[zero_bin + 1] if zero_bin + 1 < bins else counts[zero_bin - 1]
    best, best_window = float("inf"), (0, bins)
    for width in range(levels, bins + 1):
        below = int(round(zero * width / bins))
        window = (zero - below, zero - below + width)
        divergence = _kl_divergence(counts, *window, levels)
        if divergence <= best:
            best, best_window = divergence, window
    edges = observed.edges
    if spec.symmetric:
        return -float(edges[best_window[1]]), float(edges[best_window[1]])
    return float(edges[best_window[0]]), float(edges[best_window[1]])


def observe(method: CalibrationMethod, histogram: Histogram, spec: QuantSpec, percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """The range ``method`` chooses from ``histogram`` for a quantizer of ``spec`` (not minmax,
    which needs no histogram)."""
    if method == "percentile":
        return percentile_range(histogram, spec, percentile)
    if method == "mse":
        return mse_range(histogram, spec)
    if method == "entropy":
        return entropy_range(histogram, spec)
    raise InternalError(f"observer {method!r} does not read a histogram")
