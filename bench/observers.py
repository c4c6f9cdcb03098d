"""Calibration observers x bias correction, data-free W8A8 ort-cpu on the CIFAR ResNets.

Distills the default synthetic set once per model (the default synthesis settings and seed),
then quantizes with every --methods observer, bias correction off and on, and evaluates each in
ORT on the CIFAR-10 test set (all 10,000 images unless --limit). Prints one row per setting on
stderr and one JSON line last.

    python bench/observers.py [--models resnet20-cifar10,resnet32-cifar10] [--methods minmax,percentile,mse,entropy]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.options import CalibrationMethod  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402


def _model_rows(model: str, methods: list[str], images, labels, seed: int) -> dict:
    """FP32 top-1 and, per observer and bias correction, top-1, agreement and quantize seconds."""
    loaded = pipeline.load_model(model, cifar_weights(model))
    inputs = loaded.preprocessing.apply(images)
    base = build_recipe(seed=seed)
    synthetic = distill(loaded.model, loaded.input_shape, base.synth, seed, progress=False)
    fp32 = run_batched(make_session(loaded.model), inputs)
    rows = []
    for method in methods:
        for correction in (False, True):
            recipe = build_recipe(seed=seed, calibration_method=method, bias_correction=correction)
            start = time.perf_counter()
            quantized = emit(pipeline.quantize(loaded.model, synthetic.batches, recipe))
            seconds = time.perf_counter() - start
            logits = run_batched(validation_session(quantized), inputs)
            rows.append({
                "method": method,
                "bias_correction": correction,
                "top1": top1(logits, labels),
                "agreement": float((logits.argmax(1) == fp32.argmax(1)).mean()),
                "quantize_seconds": round(seconds, 2),
            })
            print(model, rows[-1], file=sys.stderr, flush=True)
    return {"model": model, "fp32_top1": top1(fp32, labels), "synth_seconds": round(synthetic.seconds, 1), "rows": rows}


def main() -> None:
    """Run the sweep and print the table as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20-cifar10,resnet32-cifar10")
    parser.add_argument("--methods", default=",".join(CalibrationMethod))
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(CalibrationMethod))
    if unknown:
        sys.exit(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(CalibrationMethod)}")
    dataset = load_dataset(asset("data/cifar10_test.npz"))
    images, labels = dataset.images[: args.limit], dataset.labels[: args.limit]
    results = [_model_rows(model, methods, images, labels, args.seed) for model in args.models.split(",")]
    emit_json({"bench": "observers", "profile": "ort-cpu", "bits": "W8A8", "eval_images": len(labels), "models": results})


if __name__ == "__main__":
    main()
