"""Fine-tuning: CIFAR-10 ResNet-20, data-free, per-channel weights, W4A4 / W3A3 / W5A5 with
static, granular and adaptive (ASQ) activation quantizers, each fine-tuned for the same time
budget by KD on one shared pool of distilled samples (weights trained too unless
--no-train-weights). Records top-1 of the emitted model in ORT on the CIFAR-10 test images at
checkpoints (for the curve, on an evenly spaced subset) and at the end on all of them, beside the torch student's own top-1
(the write-back must keep it within 0.1 points). Writes a PNG of top-1 vs minutes and prints
one JSON line.

    python bench/finetune.py [--bits W4A4,W3A3,W5A5] [--quantizers static,granular,adaptive]
                             [--minutes 15] [--device cpu|cuda] [--png finetune.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, plot_top1_curves  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import FinetuneConfig, build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402


def _recipe(bits: str, quantizer: str, config: FinetuneConfig, profile: str, seed: int):
    granularity = "granular" if quantizer == "granular" else "static"
    tuned = dataclasses.replace(config, activation_quantizer="adaptive" if quantizer == "adaptive" else "static")
    return build_recipe(bits=bits, profile=profile, granularity=granularity, finetune=tuned, seed=seed)


def _torch_top1(model, inputs: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    import torch

    from zsq_onnx.executors.torch_graph import TorchGraph

    graph = TorchGraph(model).eval()
    with torch.no_grad():
        logits = np.concatenate([graph(torch.from_numpy(inputs[i : i + batch])).numpy() for i in range(0, len(inputs), batch)])
    return top1(logits, labels)


def main() -> None:
    """Fine-tune every bits x quantizer setting and print the table as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--bits", default="W4A4,W3A3,W5A5")
    parser.add_argument("--quantizers", default="static,granular,adaptive")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--checkpoints", type=int, default=5, help="evaluations along the way, for the curve")
    parser.add_argument("--curve-images", type=int, default=2000, help="test images per checkpoint evaluation, evenly spaced")
    parser.add_argument("--pool", type=int, default=256, help="distilled samples in the pool")
    parser.add_argument("--synth-steps", type=int, default=200)
    parser.add_argument("--no-train-weights", action="store_true")
    parser.add_argument("--profile", default="sim")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="finetune.png")
    args = parser.parse_args()
    dataset = load_dataset(asset("data/cifar10_test.npz"))
    loaded = pipeline.load_model(args.model, cifar_weights(args.model))
    inputs, labels = loaded.preprocessing.apply(dataset.images), dataset.labels
    curve_subset = np.linspace(0, len(labels) - 1, min(args.curve_images, len(labels))).astype(int)  # every class: the file is sorted by class
    start = time.perf_counter()
    synth = dataclasses.replace(build_recipe().synth, samples=args.pool, steps=args.synth_steps)
    pool = distill(loaded.model, loaded.input_shape, synth, args.seed, progress=False).inputs
    fp32 = top1(run_batched(make_session(loaded.model), inputs), labels)
    config = FinetuneConfig(minutes=args.minutes, train_weights=not args.no_train_weights, device=args.device, samples=args.pool)
    record: dict = {
        "bench": "finetune", "model": args.model, "profile": args.profile, "minutes": args.minutes, "device": args.device,
        "train_weights": config.train_weights, "pool": args.pool, "synth_seconds": round(time.perf_counter() - start, 1), "fp32_top1": fp32,
    }
    curves: dict[str, list[tuple[float, float]]] = {}
    for bits in args.bits.split(","):
        for quantizer in args.quantizers.split(","):
            recipe = _recipe(bits, quantizer, config, args.profile, args.seed)
            quantized = pipeline.quantize(loaded.model, [pool[:32]], recipe)
            before = top1(run_batched(validation_session(emit(quantized)), inputs), labels)
            label = f"{bits} {quantizer}"
            curve: list[tuple[float, float]] = []

            def checkpoint(step: int, seconds: float, model, curve=curve) -> None:
                curve.append((seconds / 60, top1(run_batched(validation_session(emit(model)), inputs[curve_subset]), labels[curve_subset])))

            tuned, result = pipeline.tune(loaded.model, quantized, pool, recipe, progress=False, checkpoint=checkpoint,
                                          checkpoint_seconds=args.minutes * 60 / args.checkpoints)
            after = top1(run_batched(validation_session(emit(tuned)), inputs), labels)
            student = _torch_top1(tuned, inputs, labels)
            curves[label] = [(0.0, before), *curve[:-1], (result.seconds / 60, after)]
            record[label] = {
                "top1_before": before, "top1_after": after, "torch_student_top1": student, "emitted_minus_student_points": round(100 * (after - student), 3),
                "drop_points": round(100 * (fp32 - after), 2), "steps": result.steps, "minutes": round(result.seconds / 60, 2),
                "curve": [(round(m, 2), t) for m, t in curves[label]],
            }
            print(label, {k: v for k, v in record[label].items() if k != "curve"}, file=sys.stderr, flush=True)
    percent = {label: [(minutes, 100 * top) for minutes, top in points] for label, points in curves.items()}
    plot_top1_curves({"": percent}, 100 * fp32, "fine-tuning minutes", f"{args.model} fine-tuning on {args.device}, data-free", Path(args.png))
    record["png"] = args.png
    emit_json(record)


if __name__ == "__main__":
    main()
