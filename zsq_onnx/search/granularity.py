"""``--granularity auto``: per activation tensor, per-tensor static, per-channel static or granular.

For every tensor that may be granular (rank 3+, not an 8-bit end) each candidate quantizer is
scored by two measurements (:mod:`~zsq_onnx.search.measure`):

* error: the SQNR it leaves at the outputs of the layers that read the tensor, on the
  calibration (synthetic) inputs, all candidates in one probe model (:mod:`~zsq_onnx.search.probe`);
* cost: the ORT CPU time at batch 64 of the quantizer and the layers reading the tensor,
  emitted for the profile on their own (so an integer kernel lost to a dynamic scale counts).

Upgrades from per-tensor static are ordered by noise removed per extra millisecond
(:mod:`~zsq_onnx.search.select`); the longest of a few prefixes of that order (all of it, 3/4,
1/2, 1/4) whose whole emitted graph, measured in ORT CPU, runs within (1 + budget) x the
latency at batch 64 of the FP32 model or of the all-static graph, whichever is slower, is the
choice (``--granularity-budget``): on ort-cpu, whose static graph runs integer kernels, that is
1.3x FP32 at the default 0.3; on sim, 1.3x its own static graph. Whole graphs are timed without
bias correction, which changes bias values, not the graph ORT runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes import apply_passes
from zsq_onnx.plan.calibrate import Range, minmax_ranges
from zsq_onnx.plan.insertion import InsertionSettings, calibrate_plan, quantizer_passes
from zsq_onnx.plan.targets import QuantPlan, activation_uses
from zsq_onnx.profiles import Profile, emit
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.search.measure import batch_shapes, block_cost_ms, latency_vs, reader_sqnr
from zsq_onnx.search.probe import kind_ranges, probe_model, reader_block, readers_of
from zsq_onnx.search.select import choice_after, prefix_lengths, upgrade_order

logger = logging.getLogger(__name__)

CANDIDATES: tuple[str, ...] = ("per_tensor", "per_channel", "granular")
START = "per_tensor"
METADATA_KEY = "zsq.granularity"


@dataclass(frozen=True)
class TensorChoice:
    """The granularity chosen for one activation tensor, with every candidate's measurements."""

    tensor: str
    choice: str
    sqnr_db: dict[str, float]
    cost_ms: dict[str, float]


@dataclass(frozen=True)
class GranularityChoice:
    """The auto choice for a whole model: per tensor; and latencies relative to FP32 (ORT CPU,
    batch 64) of the all-static graph, the limit, and the chosen graph."""

    tensors: list[TensorChoice]
    static_vs_fp32: float
    limit_vs_fp32: float
    chosen_vs_fp32: float

    def to_dict(self) -> dict:
        """Plain dict, suitable for JSON."""
        return asdict(self)


def candidates(profile: Profile) -> tuple[str, ...]:
    """The candidate kinds for ``profile``: not per-channel static on integer targets, whose QDQ
    fusion ORT CPU turns into QLinearConv/QLinearGlobalAveragePool kernels that fail at run time
    on a per-channel activation scale (see :class:`~zsq_onnx.recipe.Recipe`'s checks)."""
    if profile.integer_kernels:
        return tuple(kind for kind in CANDIDATES if kind != "per_channel")
    return CANDIDATES


def _with_choice(plan: QuantPlan, picked: dict[str, str]) -> QuantPlan:
    activations = {name: QuantSpec(spec.bits, spec.symmetric, picked[name]) if name in picked else spec for name, spec in plan.activations.items()}
    return QuantPlan(plan.weights, activations, plan.rules)


def _block_cost_ms(
    folded: ir.Model, tensor: str, kind: str, ranges: Range, plan: QuantPlan, profile: Profile, settings: InsertionSettings, shapes: Mapping[str, tuple[int, ...]]
) -> float:
    """ORT CPU milliseconds of ``tensor``'s quantizer of ``kind`` and the layers reading it,
    inserted and emitted for the target's profile on their own."""
    readers = readers_of(folded.graph, tensor, plan.rules)
    block = reader_block(folded.graph, readers, shapes)
    profile.record(block)
    spec = plan.activations[tensor]
    alone = QuantPlan({node.name: plan.weights[node.name] for node in readers if node.name in plan.weights}, {tensor: QuantSpec(spec.bits, spec.symmetric, kind)}, plan.rules)
    return block_cost_ms(emit(apply_passes(block, *quantizer_passes(alone, {tensor: kind_ranges(ranges, kind)}, settings))), shapes)


def choose_granularity(
    folded: ir.Model, plan: QuantPlan, batches: Sequence[np.ndarray], profile: Profile, settings: InsertionSettings, budget: float
) -> tuple[QuantPlan, GranularityChoice]:
    """``plan`` with each granular spec replaced by the auto choice (module docstring) for
    ``profile``, its quantizers inserted as ``settings`` say, within the latency ``budget`` (a
    fraction over the slower of FP32 and the all-static graph), and the measurements behind it."""
    specs = {name: spec for name, spec in plan.activations.items() if spec.granularity == "granular"}
    if not specs:
        return plan, GranularityChoice([], 1.0, 1.0, 1.0)
    kinds = candidates(profile)
    ranges = minmax_ranges(folded, list(specs), batches, per_channel=set(specs))
    sqnr = reader_sqnr(*probe_model(folded, specs, ranges, plan.rules, kinds), batches)
    uses = [node for node, _ in activation_uses(folded.graph, plan.rules)]
    block_values = [v.name for node in uses for v in [*node.inputs, node.outputs[0]] if v is not None and v.const_value is None]
    shapes = batch_shapes(folded, list(dict.fromkeys(block_values)), batches[0][:1])
    costs = {tensor: {kind: _block_cost_ms(folded, tensor, kind, ranges[tensor], plan, profile, settings, shapes) for kind in kinds} for tensor in specs}
    order = upgrade_order(sqnr, costs, START)
    relative_latency = latency_vs(folded, batches[0].shape[1:])

    def latency_after(count: int) -> float:
        candidate = _with_choice(plan, choice_after(list(specs), order, count, START))
        quantized = apply_passes(folded, *quantizer_passes(candidate, calibrate_plan(folded, candidate, batches, settings).ranges, settings))
        profile.record(quantized)
        return relative_latency(emit(quantized))

    static = latency_after(0)
    limit = (1 + budget) * max(1.0, static)
    count, relative = 0, static
    for candidate in prefix_lengths(len(order)):
        candidate_relative = latency_after(candidate)
        if candidate_relative <= limit:
            count, relative = candidate, candidate_relative
            break
    picked = choice_after(list(specs), order, count, START)
    logger.info("auto granularity: %d of %d tensors upgraded, %.2fx FP32 (limit %.2fx)", count, len(specs), relative, limit)
    tensors = [TensorChoice(name, picked[name], sqnr[name], costs[name]) for name in specs]
    return _with_choice(plan, picked), GranularityChoice(tensors, static, limit, relative)
