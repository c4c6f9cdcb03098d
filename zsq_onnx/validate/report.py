"""The conversion report's content: the JSON document a conversion produces (what ran, how
accurate, how large, how long) and its strict JSON text. Its renderings are in
:mod:`zsq_onnx.validate.render`, its files in :mod:`zsq_onnx.validate.publish`."""

from __future__ import annotations

import json
import logging
import math
import resource
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from zsq_onnx.distributed import World
from zsq_onnx.executors.ort_graph import runtime_record
from zsq_onnx.executors.runtime import Execution, describe_execution
from zsq_onnx.io.foreign import CONVERSION_KEY
from zsq_onnx.plan.calibrate import recorded_calibration
from zsq_onnx.validate.evaluate import Evaluation
from zsq_onnx.validate.inspection import lookup_table_storage

if TYPE_CHECKING:
    from zsq_onnx.finetune.loop import FinetuneResult
    from zsq_onnx.synth.distill import SynthResult

logger = logging.getLogger(__name__)


def quantizer_counts(model: ir.Model) -> dict[str, int]:
    """Weight quantizers (DequantizeLinear of an 8/4-bit initializer), bias quantizers (of an int32
    initializer) and activation quantizers (QuantizeLinear)."""
    stored = [n.inputs[0].const_value.dtype for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None]
    return {
        "weights": sum(1 for dtype in stored if dtype != ir.DataType.INT32),
        "biases": sum(1 for dtype in stored if dtype == ir.DataType.INT32),
        "activations": sum(1 for n in model.graph if n.op_type == "QuantizeLinear"),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(
    name: str, recipe: dict[str, Any], evaluation: Evaluation, calibration: SynthResult, fp32: ir.Model, quantized: ir.Model,
    diagnostics: dict[str, Any], seconds: dict[str, float], world: World | None = None,
) -> dict[str, Any]:
    """The report of one conversion (accuracies are fractions 0..1); ``recipe`` is the recipe's
    JSON form (:meth:`~zsq_onnx.recipe.Recipe.to_dict`); ``world``: the torch.distributed group
    it ran in (one process by default), whose rank 0 timed the stages."""
    world = world or World()
    evaluated = evaluation.to_dict()
    evaluated["quantized"]["quantizers"] = quantizer_counts(quantized)
    sizes = evaluated.pop("size_bytes")
    return {
        "model": name,
        "recipe": recipe,
        **evaluated,
        **diagnostics,
        "size_bytes": sizes,
        **({"lookup_tables": tables} if (tables := lookup_table_storage(quantized))["layers"] else {}),
        "calibration": {
            "source": calibration.source,
            "samples": sum(len(b) for b in calibration.batches),
            "synth_loss_start": calibration.loss_curve[0] if calibration.loss_curve else None,
            "synth_loss_end": calibration.loss_curve[-1] if calibration.loss_curve else None,
        },
        **observer_sections(recipe, quantized),
        **({"reconstruction": section} if (section := reconstruction_section(quantized)) is not None else {}),
        "seconds": {key: round(value, 3) for key, value in seconds.items()},
        "distributed": {"world_size": world.size, "backend": world.backend},
        "runtime": runtime_section(evaluation),
        **({"opset_conversion": fp32.metadata_props[CONVERSION_KEY]} if CONVERSION_KEY in fp32.metadata_props else {}),
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }


def runtime_section(evaluation: Evaluation) -> dict[str, Any]:
    """The ORT version, the CPU features that decide its kernels, and how each kind of
    measurement ran (optimization level, float QDQ or integer kernels)."""
    measured = describe_execution(Execution.FLOAT_QDQ)
    return {
        **runtime_record(),
        "sessions": {"calibration": measured, "bias_correction": measured, "searches": measured, **evaluation.execution,
                     "search_latency": describe_execution(Execution.INTEGER)},
    }


def observer_sections(recipe: dict[str, Any], quantized: ir.Model) -> dict[str, Any]:
    """How activation ranges were chosen (``activation_ranges``: the observer method and, per
    static activation quantizer, its range and the share of calibration values outside it) and
    the bias correction (``bias_correction``: per corrected layer the largest bias change), as
    recorded in the quantized model, else as the recipe (JSON form) asked."""
    recorded = recorded_calibration(quantized) or {}
    return {
        "activation_ranges": {
            "method": recorded.get("method", recipe["calibration_method"]),
            **({"percentile": recorded["percentile"]} if "percentile" in recorded else {}),
            "tensors": recorded.get("tensors", []),
        },
        "bias_correction": recorded.get("bias_correction", {"enabled": recipe["bias_correction"], "max_abs_shift": {}}),
    }


def reconstruction_section(quantized: ir.Model) -> dict[str, Any] | None:
    """The weight reconstruction as the stage recorded it in the model's metadata (see
    :data:`zsq_onnx.reconstruct.stage.METADATA_KEY`), or None when the weights were rounded to
    nearest: ``method`` (gptq, adaround), ``mode`` (layer or block) and per ``units`` entry (a
    layer, or a block named by its block or first node) the output error on the calibration
    inputs with nearest rounding (``error_before``) and after (``error_after``) and the seconds
    it took; ``total`` sums them. Layer and block records share this shape."""
    from zsq_onnx.reconstruct.stage import METADATA_KEY

    text = quantized.metadata_props.get(METADATA_KEY)
    if text is None:
        return None
    recorded = json.loads(text)
    mode = recorded.get("mode", "layer")
    entries = recorded.get("blocks" if mode == "block" else "layers", recorded.get("layers", recorded.get("blocks", [])))
    synonyms = {"name": ("block", "name", "node"), "error_before": ("error_before", "nearest_error"), "error_after": ("error_after", "error"), "seconds": ("seconds",)}
    units = []
    for entry in entries:
        found = {field: next((key for key in keys if entry.get(key) is not None), None) for field, keys in synonyms.items()}
        unit = {field: entry[key] if key is not None else None for field, key in found.items()}
        units.append({**unit, **{key: value for key, value in entry.items() if key not in found.values()}})  # other keys as recorded
    total = lambda key: float(sum(unit[key] for unit in units if unit[key] is not None))  # noqa: E731
    return {
        "method": recorded.get("method", recorded.get("weight_rounding")),
        "mode": mode,
        "units": units,
        "total": {"units": len(units), "improved": sum(1 for u in units if None not in (u["error_before"], u["error_after"]) and u["error_after"] < u["error_before"]),
                  "error_before": total("error_before"), "error_after": total("error_after"), "seconds": round(total("seconds"), 3)},
    }


def finetune_section(result: FinetuneResult) -> dict[str, Any]:
    """The fine-tuning part of the report: steps, time, loss and agreement at start and end, and
    a generator's loss at start and end when the batches came from one."""
    head, tail = slice(0, 20), slice(-20, None)
    mean = lambda values: float(sum(values) / len(values)) if values else None  # noqa: E731
    return {
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "device": result.device,
        "trained": result.trained,
        "loss_start": mean(result.loss_curve[head]),
        "loss_end": mean(result.loss_curve[tail]),
        "batch_agreement_start": mean(result.agreement_curve[head]),
        "batch_agreement_end": mean(result.agreement_curve[tail]),
        "generator_loss_start": mean(result.source_loss_curve[head]),
        "generator_loss_end": mean(result.source_loss_curve[tail]),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """Strict JSON text (non-finite numbers become null)."""
    return json.dumps(_finite(report), indent=2, sort_keys=False) + "\n"
