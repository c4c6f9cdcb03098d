"""The conversion report: a JSON document and a short human summary."""

from __future__ import annotations

import json
import math
import resource
from typing import TYPE_CHECKING, Any

import onnx

from zsq_onnx.recipe import Recipe
from zsq_onnx.validate import Evaluation

if TYPE_CHECKING:
    from zsq_onnx.synth import SynthResult


def quantizer_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Weight quantizers (DequantizeLinear of an integer initializer) and activation ones (QuantizeLinear)."""
    initializers = {t.name for t in model.graph.initializer}
    weights = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers)
    activations = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    return {"weights": weights, "activations": activations}


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(name: str, recipe: Recipe, evaluation: Evaluation, calibration: "SynthResult", fp32: onnx.ModelProto, quantized: onnx.ModelProto, seconds: dict[str, float]) -> dict[str, Any]:
    """The report of one conversion (accuracies are fractions 0..1)."""
    return {
        "model": name,
        "recipe": recipe.to_dict(),
        "eval": {"dataset": evaluation.dataset, "samples": evaluation.samples},
        "fp32": {"top1": evaluation.fp32_top1, "latency_ms_b64": evaluation.fp32_latency_ms_b64},
        "quantized": {
            "top1": evaluation.quantized_top1,
            "agreement": evaluation.agreement,
            "output_sqnr_db": evaluation.output_sqnr_db,
            "latency_ms_b64": evaluation.quantized_latency_ms_b64,
            "quantizers": quantizer_counts(quantized),
        },
        "size_bytes": {"fp32": fp32.ByteSize(), "quantized": quantized.ByteSize()},
        "calibration": {
            "source": calibration.source,
            "samples": sum(len(b) for b in calibration.batches),
            "synth_loss_start": calibration.loss_curve[0] if calibration.loss_curve else None,
            "synth_loss_end": calibration.loss_curve[-1] if calibration.loss_curve else None,
        },
        "seconds": {key: round(value, 3) for key, value in seconds.items()},
        "peak_memory_mb": round(peak_memory_mb(), 1),
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


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines: accuracies, agreement, sizes, time."""
    recipe = report["recipe"]
    bits = f"W{recipe['weights']['bits']}A{recipe['activations']['bits']}"
    fp32, quantized, size = report["fp32"], report["quantized"], report["size_bytes"]
    lines = [
        f"{report['model']}: {bits} {recipe['profile']}, calibrated on {report['calibration']['samples']} {report['calibration']['source']} samples, evaluated on {report['eval']['dataset']} ({report['eval']['samples']} samples)",
        f"  top-1   FP32 {_percent(fp32['top1'])}   {bits} {_percent(quantized['top1'])}   agreement {_percent(quantized['agreement'])}   output SQNR {quantized['output_sqnr_db']:.1f} dB",
        f"  size    FP32 {size['fp32'] / 1024:.1f} KiB   {bits} {size['quantized'] / 1024:.1f} KiB",
        f"  latency batch 64: FP32 {fp32['latency_ms_b64']:.2f} ms   {bits} {quantized['latency_ms_b64']:.2f} ms",
        "  seconds " + "  ".join(f"{k} {v:.2f}" for k, v in report["seconds"].items()) + f"   peak memory {report['peak_memory_mb']:.0f} MiB",
    ]
    return "\n".join(lines)
