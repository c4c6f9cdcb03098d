"""Calibration observers on arrays with known answers, and their streaming calibration in ORT."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.conftest import parse_ir
from zsq_onnx.plan.calibrate import calibrate_ranges
from zsq_onnx.plan.observers import Histogram, entropy_range, magnitudes, mse_range, observe, percentile_range, quantile
from zsq_onnx.recipe import QuantSpec

INT8 = QuantSpec(8, True)
UINT8 = QuantSpec(8, False)

IDENTITY = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] x) => (float[N, 4] y)
{ y = Identity (x) }
"""


def _histogram(values: np.ndarray, spec: QuantSpec, bins: int = 2048) -> Histogram:
    histogram = Histogram.for_spec(float(values.min()), float(values.max()), spec, bins)
    histogram.add(values)
    return histogram


def _with_outlier(rng: np.random.Generator) -> np.ndarray:
    """40,000 values uniform in [-1, 1] and one at 50, shaped as 4 columns."""
    values = rng.uniform(-1, 1, 40_000).astype(np.float32)
    values[12_345] = 50.0
    return values.reshape(-1, 4)


@pytest.mark.parametrize("spec", [INT8, UINT8], ids=["symmetric", "asymmetric"])
def test_outlier_is_clipped_by_percentile_and_mse_not_by_minmax(spec):
    values = _with_outlier(np.random.default_rng(0))
    model = parse_ir(IDENTITY)
    batches = np.split(values, 4)
    found = {method: calibrate_ranges(model, {"y": spec}, batches, method) for method in ("minmax", "percentile", "mse")}
    low, high = found["minmax"].ranges["y"]
    assert (float(low), float(high)) == (float(values.min()), 50.0) and found["minmax"].clipped["y"] == 0.0
    assert found["minmax"].method == "minmax" and found["percentile"].method == "percentile"
    low, high = found["percentile"].ranges["y"]
    assert 0.95 < float(high) < 1.1 and -1.1 < float(low) < -0.95
    assert 1e-5 < found["percentile"].clipped["y"] < 1e-3
    low, high = found["mse"].ranges["y"]
    assert float(high) < 50 and found["mse"].clipped["y"] > 0


def test_mse_at_4_bits_clips_into_the_bulk():
    values = _with_outlier(np.random.default_rng(1)).ravel()
    low, high = mse_range(_histogram(values, QuantSpec(4, True)), QuantSpec(4, True))
    assert low == -high and 0.8 < high < 1.3


def test_percentile_of_uniform_values():
    values = np.linspace(0, 1, 100_001)
    assert percentile_range(_histogram(values, INT8), INT8, 99.0) == pytest.approx((-0.99, 0.99), abs=1e-3)
    both = np.linspace(-1, 1, 200_001)
    assert percentile_range(_histogram(both, UINT8), UINT8, 99.0) == pytest.approx((-0.98, 0.98), abs=2e-3)
    assert percentile_range(_histogram(both, INT8), INT8, 99.0) == pytest.approx((-0.99, 0.99), abs=2e-3)
    assert quantile(_histogram(values, UINT8), 0.5) == pytest.approx(0.5, abs=1e-3)


def test_mse_of_a_gaussian_matches_aciq_and_a_search_on_the_raw_values():
    values = np.random.default_rng(2).standard_normal(400_000)
    _, high = mse_range(_histogram(values, INT8), INT8)
    assert 3.7 < high < 4.2  # Banner et al. (ACIQ): 3.92 sigma at 8 bits
    spec = QuantSpec(4, True)
    _, high = mse_range(_histogram(values, spec), spec)

    def error(threshold: float) -> float:
        scale = threshold / spec.qmax
        return float(np.mean((np.clip(np.rint(values / scale), spec.qmin, spec.qmax) * scale - values) ** 2))

    best = min(error(t) for t in np.linspace(1.0, 4.0, 301))
    assert error(high) < 1.01 * best


def _reference_entropy(counts: np.ndarray, levels: int) -> int:
    """pytorch-quantization's TensorRT entropy search (zero bin replaced by its neighbour,
    np.digitize merging, last minimum), written plainly: the window's bin count it chooses."""
    bins = counts.astype(np.float64).copy()
    bins[0] = bins[1]
    divergences = []
    for i in range(levels, len(bins) + 1):
        digitized = np.digitize(range(i), np.linspace(0, i, num=levels + 1)) - 1
        digitized[bins[:i] == 0] = -1
        merged = np.zeros(levels)
        for index, group in enumerate(digitized):
            if group != -1:
                merged[group] += bins[index]
        for group, count in Counter(digitized).items():
            if group != -1:
                merged[group] /= count
        q = np.array([merged[group] if group != -1 else 0.0 for group in digitized])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        keep = p > 0
        divergences.append(np.sum(p[keep] * np.log(p[keep] / q[keep])) if (q[keep] > 0).all() else np.inf)
    divergences = np.array(divergences)
    return levels + len(divergences) - 1 - int(np.argmin(divergences[::-1]))


def test_entropy_matches_the_reference_search_on_a_laplace_sample():
    spec = QuantSpec(4, True)
    values = np.random.default_rng(3).laplace(size=200_000)
    histogram = _histogram(values, spec, bins=256)
    _, high = entropy_range(histogram, spec)
    folded = magnitudes(histogram)
    assert len(folded.counts) == 256
    assert high == pytest.approx(folded.edges[_reference_entropy(folded.counts, spec.qmax + 1)])
    assert high < np.abs(values).max()


def test_entropy_of_a_gaussian_keeps_most_of_the_tail():
    values = np.random.default_rng(4).standard_normal(200_000)
    low, high = entropy_range(_histogram(values, INT8), INT8)
    assert low == -high and 4.0 < high <= np.abs(values).max() + 1e-6


def test_entropy_of_relu_outputs_searches_the_upper_end():
    values = np.maximum(np.random.default_rng(5).standard_normal(200_000), 0)
    low, high = entropy_range(_histogram(values, UINT8), UINT8)
    assert low == 0 and 3.0 < high <= values.max() + 1e-6


def test_histograms_accumulated_over_batches_equal_one_shot():
    values = _with_outlier(np.random.default_rng(6))
    whole = _histogram(values, UINT8)
    streamed = Histogram.for_spec(float(values.min()), float(values.max()), UINT8)
    for part in np.array_split(values, 7):
        streamed.add(part)
    np.testing.assert_array_equal(streamed.counts, whole.counts)
    folded, direct = magnitudes(_histogram(values, INT8)).counts, _histogram(np.abs(values), INT8).counts[2048:]
    assert folded.sum() == direct.sum() and np.abs(folded - direct).max() <= 1  # values on a bin edge may round either way
    model = parse_ir(IDENTITY)
    for method in ("percentile", "mse", "entropy"):
        one = calibrate_ranges(model, {"y": UINT8}, [values], method)
        many = calibrate_ranges(model, {"y": UINT8}, np.array_split(values, 5), method)
        assert [float(v) for v in one.ranges["y"]] == [float(v) for v in many.ranges["y"]]
        assert one.clipped == many.clipped


def test_constant_tensor_and_per_channel_ranges():
    zeros = np.zeros((8, 4), np.float32)
    for method in ("percentile", "mse", "entropy"):
        assert observe(method, _histogram(zeros.ravel(), INT8), INT8) == (0.0, 0.0)
    values = np.arange(32, dtype=np.float32).reshape(8, 4)
    found = calibrate_ranges(parse_ir(IDENTITY), {"y": UINT8}, [values], "entropy", per_channel={"y"})
    np.testing.assert_array_equal(found.ranges["y"][1], values.max(axis=0))
    assert found.clipped == {"y": 0.0}
    assert found.to_dict()["tensors"][0]["high"] == [28.0, 29.0, 30.0, 31.0]


def test_fraction_outside():
    histogram = _histogram(np.linspace(-1, 1, 100_001), UINT8)
    assert histogram.fraction_outside(-0.5, 0.5) == pytest.approx(0.5, abs=1e-3)
    assert histogram.fraction_outside(-1, 1) == 0.0
    folded = magnitudes(_histogram(np.linspace(-1, 1, 100_001), INT8))
    assert folded.fraction_outside(0, 0.5) == pytest.approx(0.5, abs=1e-3)
