"""EfficientNet-Lite0 data-free W8A8 against FP32 and ORT's quantize_static fed real images.

On the ImageNet sample (500 labelled images, ``data/imagenet_sample500_224.npz`` in the assets):
top-1, drop from FP32 and agreement of zsq's ``ort-cpu`` and ``sim`` graphs (default recipe,
distilled data) and of ORT's quantize_static (QDQ, per-channel, MinMax) calibrated on
``--real-images`` of the sample; latency at batch 1 and 32 of all of them back to back in one
run, as ratios to FP32; file sizes; seconds per stage, synthesis per step and the convert's peak
memory (the ``ort-cpu`` convert runs first, so the process peak is its own). Needs the ``zoo``
extra. ``--observers`` adds each calibration method with bias correction off and on, and
``--sweep`` a samples x steps synthesis table. Prints one JSON line last.

    python bench/efficientnet.py [--observers] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, emit_json, ort_quantize_static, size_bytes  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import Execution, latency_ms, make_session, run_batched  # noqa: E402
from zsq_onnx.io import onnx_io  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.options import CalibrationMethod  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import agreement, top1  # noqa: E402

MODEL = "efficientnet-lite0"
SWEEP = ((16, 10), (32, 10), (32, 20), (32, 50), (64, 20))


def _scores(fp32_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    fp32_top1 = top1(fp32_logits, labels)
    quantized = top1(logits, labels)
    return {"top1": quantized, "drop_points": round(100 * (fp32_top1 - quantized), 2), "agreement": agreement(fp32_logits, logits)}


def _latency_ratios(models: dict[str, onnx.ModelProto], sample: np.ndarray, rounds: int = 3) -> dict:
    """Median latency per model over ``rounds`` interleaved rounds, and FP32's over each."""
    sessions = {key: make_session(model, execution=Execution.INTEGER, purpose="latency") for key, model in models.items()}
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for _ in range(rounds):
        for key, session in sessions.items():
            times[key].append(latency_ms(session, sample, repeats=20 if len(sample) == 1 else 5))
    median = {key: float(np.median(values)) for key, values in times.items()}
    return {"ms": {key: round(value, 2) for key, value in median.items()}, "speedup_vs_fp32": {key: round(median["fp32"] / value, 3) for key, value in median.items()}}


def _quantized_scores(fp32, batches, recipe, inputs, fp32_logits, labels) -> dict:
    start = time.perf_counter()
    emitted = emit(pipeline.quantize(fp32, batches, recipe))
    return {**_scores(fp32_logits, run_batched(validation_session(emitted), inputs), labels), "quantize_seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    """Convert Lite0 data-free, compare with FP32 and ORT, print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-images", type=int, default=64, help="images of the sample that calibrate ORT's quantize_static")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--observers", action="store_true", help="also each calibration method, bias correction off and on")
    parser.add_argument("--sweep", action="store_true", help="also a samples x steps synthesis table")
    args = parser.parse_args()
    dataset = load_dataset(asset("data/imagenet_sample500_224.npz"))
    recipe = build_recipe(seed=args.seed)
    record: dict = {"bench": "efficientnet", "model": MODEL, "images": len(dataset), "recipe": {"samples": recipe.synth.samples, "steps": recipe.synth.steps}}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        result = pipeline.convert(MODEL, folder / "zsq.onnx", recipe, eval_data=dataset.head(32), progress=False)
        record["seconds"] = result.report["seconds"]
        record["synth_seconds_per_step"] = round(result.report["seconds"]["synth"] / recipe.synth.steps, 2)
        record["peak_memory_mb"] = result.report["peak_memory_mb"]
        loaded = pipeline.load_model(MODEL)
        inputs = loaded.preprocessing.apply(dataset.images)
        onnx_io.save_onnx(loaded.model, folder / "fp32.onnx")
        ort_model = ir.serde.deserialize_model(onnx.load(ort_quantize_static(folder / "fp32.onnx", inputs[: args.real_images], folder)))
        synthetic = distill(loaded.model, loaded.input_shape, recipe.synth, recipe.seed, progress=False)
        sim = emit(pipeline.quantize(loaded.model, synthetic.batches, build_recipe(profile="sim", seed=args.seed)))
        models = {"fp32": loaded.model, "zsq_ort_cpu": result.model, "zsq_sim": sim, "ort_real_data": ort_model}
        fp32_logits = run_batched(make_session(loaded.model), inputs)
        record["fp32_top1"] = top1(fp32_logits, dataset.labels)
        for key in ("zsq_ort_cpu", "zsq_sim", "ort_real_data"):
            record[key] = _scores(fp32_logits, run_batched(validation_session(models[key]), inputs), dataset.labels)
            print(key, record[key], file=sys.stderr, flush=True)
        record["size_bytes"] = {key: size_bytes(model) for key, model in models.items()}
        record["size_ratio_fp32_over_zsq"] = round(record["size_bytes"]["fp32"] / record["size_bytes"]["zsq_ort_cpu"], 2)
        record["latency_b1"] = _latency_ratios({k: v for k, v in models.items() if k != "zsq_sim"}, inputs[:1])
        record["latency_b32"] = _latency_ratios({k: v for k, v in models.items() if k != "zsq_sim"}, inputs[:32])
        if args.observers:
            record["observers"] = [
                {"method": method, "bias_correction": correction,
                 **_quantized_scores(loaded.model, synthetic.batches, build_recipe(seed=args.seed, calibration_method=method, bias_correction=correction), inputs, fp32_logits, dataset.labels)}
                for method in CalibrationMethod for correction in (False, True)
            ]
        if args.sweep:
            record["sweep"] = []
            for samples, steps in SWEEP:
                config = build_recipe(samples=samples, synth_steps=steps, seed=args.seed)
                distilled = distill(loaded.model, loaded.input_shape, config.synth, args.seed, progress=False)
                row = {"samples": samples, "steps": steps, "synth_seconds": round(distilled.seconds, 1), "final_loss": round(distilled.loss_curve[-1], 1)}
                record["sweep"].append({**row, **_quantized_scores(loaded.model, distilled.batches, config, inputs, fp32_logits, dataset.labels)})
                print(record["sweep"][-1], file=sys.stderr, flush=True)
    emit_json(record)


if __name__ == "__main__":
    main()
