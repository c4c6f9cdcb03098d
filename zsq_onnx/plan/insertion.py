"""How a quantization plan becomes quantizers in the graph: the calibration of its static
activation quantizers and the one pass sequence that inserts them, shared by the pipeline and
the searches (which insert candidate plans to measure them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx.options import CalibrationMethod
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.passes.quantize_bias import QuantizeBiasPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.plan.calibrate import Calibration, Range, calibrate_ranges
from zsq_onnx.plan.targets import QuantPlan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InsertionSettings:
    """What inserting a plan's quantizers reads besides the plan: the observer of static
    activation ranges, and how the target stores and routes quantized tensors (see
    :class:`~zsq_onnx.profiles.Profile`: ``use_4bit_types``, ``activation_4bit_types`` and
    ``routes_all_readers``)."""

    calibration_method: CalibrationMethod
    calibration_percentile: float
    use_4bit_types: bool
    activation_4bit_types: bool
    all_readers: bool


def calibrate_plan(folded: ir.Model, plan: QuantPlan, batches: Sequence[np.ndarray], settings: InsertionSettings) -> Calibration:
    """Ranges of the static activation quantizers of ``plan`` on ``batches``, by the settings'
    observer (per-channel ones by their per-channel min/max); granular ones need none."""
    static = {name: spec for name, spec in plan.activations.items() if spec.granularity != "granular"}
    per_channel = {name for name, spec in static.items() if spec.granularity == "per_channel"}
    logger.debug("calibrating %d static activation quantizers (%d per channel) by %s on %d samples",
                 len(static), len(per_channel), settings.calibration_method, sum(len(batch) for batch in batches))
    return calibrate_ranges(folded, static, batches, settings.calibration_method, per_channel, settings.calibration_percentile)


def quantizer_passes(
    plan: QuantPlan, ranges: Mapping[str, Range], settings: InsertionSettings, bias_correction: ir.passes.PassBase | None = None
) -> list[ir.passes.PassBase]:
    """The passes that insert ``plan``'s quantizers as ``settings`` say: activations first (the
    rules recognise weighted ops by their float weights), then weights, then (after
    ``bias_correction``, which needs quantized weights and float biases) int32 biases."""
    return [
        QuantizeActivationsPass(plan.activations, ranges, plan.rules, settings.activation_4bit_types, all_readers=settings.all_readers),
        QuantizeWeightsPass(plan.weights, settings.use_4bit_types),
        *([bias_correction] if bias_correction is not None else []),
        QuantizeBiasPass(),
    ]
