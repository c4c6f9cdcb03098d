"""Statistics of intermediate tensors over calibration batches, run in ORT and streamed batch by
batch (no tensor is kept past its batch): min/max ranges, observer-chosen ranges with the share
of values they clip, and the mean inputs of weighted layers (for bias correction).

In a torch.distributed group each rank runs its :func:`~zsq_onnx.distributed.part` of every
batch and the statistics are reduced over ranks: min/max and histogram counts exactly, means
as float64 sums."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.plan.observers import Histogram, observe
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import DEFAULT_PERCENTILE, CalibrationMethod

logger = logging.getLogger(__name__)

METADATA_KEY = "zsq.calibration"
Range = tuple[np.ndarray, np.ndarray]


def with_outputs(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` that also outputs the tensors ``names`` (graph inputs or node outputs)."""
    result = model.clone()
    graph = result.graph
    values = {value.name: value for value in graph.inputs} | {value.name: value for node in graph for value in node.outputs}
    present = {value.name for value in graph.outputs}
    graph.outputs.extend(values[name] for name in dict.fromkeys(names) if name not in present)
    return result


def outputs_only(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` whose outputs are the tensors ``names`` alone, without the nodes they do
    not need: ORT runs every node of a graph whatever outputs a run asks for, so a layer's input
    early in a network costs only the layers before it."""
    result = with_outputs(model, names)
    graph = result.graph
    wanted = [value for value in graph.outputs if value.name in set(names)]
    graph.outputs.clear()
    graph.outputs.extend(wanted)
    ir.passes.common.RemoveUnusedNodesPass()(result)
    return result


def stream(model: ir.Model, names: Sequence[str], batches: Sequence[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """The tensors ``names`` of this rank's part of each batch, one batch at a time, computed in
    ORT as float QDQ (the same on every CPU; see :class:`~zsq_onnx.executors.runtime.Execution`)."""
    if not any(len(batch) for batch in batches):
        raise BadInputError("no calibration batches were given")
    session = make_session(outputs_only(model, names), purpose="calibration")
    input_name = session.get_inputs()[0].name
    for batch in batches:
        mine = np.asarray(batch[distributed.part(len(batch))], np.float32)
        if len(mine):
            yield dict(zip(names, session.run(list(names), {input_name: mine})))


def minmax_ranges(
    model: ir.Model, names: Sequence[str], batches: Sequence[np.ndarray], per_channel: Collection[str] = ()
) -> dict[str, Range]:
    """(min, max) of each tensor in ``names`` over all ``batches``, run in ORT: scalars, or
    vectors over axis 1 for the tensors in ``per_channel``."""
    names = list(names)
    if not names:
        return {}
    local: dict[str, Range] = {}
    for values in stream(model, names, batches):
        for name, value in values.items():
            axes = tuple(i for i in range(value.ndim) if i != 1) if name in per_channel and value.ndim > 1 else None
            _widen(local, name, value.min(axis=axes), value.max(axis=axes))
    ranges: dict[str, Range] = {}
    for part in distributed.gather(local):
        for name, (low, high) in part.items():
            _widen(ranges, name, low, high)
    return {name: (np.asarray(ranges[name][0], np.float32), np.asarray(ranges[name][1], np.float32)) for name in names}


def _widen(ranges: dict[str, Range], name: str, low: np.ndarray, high: np.ndarray) -> None:
    """Widen ``ranges[name]`` to hold [low, high] (set it when absent)."""
    ranges[name] = (np.minimum(ranges[name][0], low), np.maximum(ranges[name][1], high)) if name in ranges else (low, high)


def histograms(model: ir.Model, empty: Mapping[str, Histogram], batches: Sequence[np.ndarray]) -> dict[str, Histogram]:
    """``empty`` histograms (fixed ranges) with the values of their tensors over all ``batches`` added."""
    for values in stream(model, list(empty), batches):
        for name, value in values.items():
            empty[name].add(value)
    if distributed.world().distributed:
        for name, counts in zip(empty, zip(*distributed.gather([empty[name].counts for name in empty]))):
            empty[name].counts = np.sum(counts, axis=0)
    return dict(empty)


@dataclass(frozen=True)
class Calibration:
    """Ranges of static activation quantizers as ``method`` chose them, and per tensor the share of
    calibration values outside its range (estimated from its histogram, to within one bin)."""

    method: CalibrationMethod
    ranges: dict[str, Range]
    clipped: dict[str, float]
    percentile: float = DEFAULT_PERCENTILE

    def to_dict(self) -> dict:
        """What the report shows: method, and per tensor range and clipped fraction."""
        return {
            "method": self.method,
            **({"percentile": self.percentile} if self.method == "percentile" else {}),
            "tensors": [
                {"tensor": name, "low": _floats(low), "high": _floats(high), "clipped_fraction": self.clipped[name]}
                for name, (low, high) in self.ranges.items()
            ],
        }


def _floats(value: np.ndarray) -> float | list[float]:
    return float(value) if np.ndim(value) == 0 else [float(v) for v in np.ravel(value)]


def calibrate_ranges(
    model: ir.Model,
    specs: Mapping[str, QuantSpec],
    batches: Sequence[np.ndarray],
    method: CalibrationMethod,
    per_channel: Collection[str] = (),
    percentile: float = DEFAULT_PERCENTILE,
) -> Calibration:
    """Ranges of the tensors ``specs`` names for static quantizers of those specs, by ``method``.

    A first pass takes min/max; other methods then histogram each per-tensor quantizer's values
    over that range in a second pass (see :mod:`zsq_onnx.plan.observers`) and choose from it. Tensors in
    ``per_channel`` keep their per-channel min/max whatever the method (only ``sim`` calibrates
    per-channel activations; they clip nothing)."""
    ranges = minmax_ranges(model, list(specs), batches, per_channel)
    observed = [name for name in specs if name not in per_channel]
    clipped = dict.fromkeys(ranges, 0.0)
    if method == "minmax" or not observed:
        return Calibration(method, ranges, clipped, percentile)
    empty = {name: Histogram.for_spec(float(ranges[name][0]), float(ranges[name][1]), specs[name]) for name in observed}
    for name, histogram in histograms(model, empty, batches).items():
        low, high = observe(method, histogram, specs[name], percentile)
        ranges[name] = (np.asarray(low, np.float32), np.asarray(high, np.float32))
        covered = (low, high) if specs[name].symmetric else (min(low, 0.0), max(high, 0.0))  # an affine range always holds 0
        clipped[name] = histogram.fraction_outside(*covered)
        logger.debug("%s %s: range [%.4g, %.4g], clips %.4f%%", method, name, low, high, 100 * clipped[name])
    return Calibration(method, ranges, clipped, percentile)


def input_means(model: ir.Model, nodes: Collection[str], batches: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per node named in ``nodes``, the mean over all samples of ``batches`` of its first input,
    one value per channel and position ([C, *spatial] for a Conv, [K] for a Gemm): bias correction
    averages from it exactly what each kernel tap reads."""
    inputs = {node.name: node.inputs[0].name for node in model.graph if node.name in nodes}
    names = list(dict.fromkeys(inputs.values()))
    if not names:
        return {}
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(names, 0)
    for values in stream(model, names, batches):
        for name, value in values.items():
            total = value.sum(axis=0, dtype=np.float64)
            sums[name] = sums[name] + total if name in sums else total
            counts[name] += len(value)
    sums, counts = _summed(distributed.gather((sums, counts)))
    return {node: sums[name] / counts[name] for node, name in inputs.items()}


def _summed(parts: list[tuple[dict[str, np.ndarray], dict[str, int]]]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The ranks' (sums, counts) added up, in rank order."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for rank_sums, rank_counts in parts:
        for name, total in rank_sums.items():
            sums[name] = sums[name] + total if name in sums else total
        for name, count in rank_counts.items():
            counts[name] = counts.get(name, 0) + count
    return sums, counts


def recorded_calibration(model: ir.Model) -> dict | None:
    """The calibration record that :func:`zsq_onnx.pipeline.insert_quantizers` wrote into
    ``model``'s metadata (method, per tensor range and clipped fraction, bias correction), or None."""
    text = model.metadata_props.get(METADATA_KEY)
    return json.loads(text) if text is not None else None
