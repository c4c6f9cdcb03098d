"""zsq-onnx with no data vs ONNX Runtime's quantize_static calibrated on 512 REAL images.

Both W8A8 QDQ (per-channel int8 weights, uint8 activations, MinMax), evaluated in ORT CPU on
all 10k CIFAR-10 test images, with latency at batch 1 and 64 measured in the same run and file
sizes. Prints one JSON line last.

    python bench/vs_ort.py --model resnet20-cifar10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, fp32_ort_and_zsq  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import Execution, latency_ms, make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402


def main() -> None:
    """Run both quantizers on one model and compare them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--real-images", type=int, default=512)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    weights, data = cifar_weights(args.model), asset("data/cifar10_test.npz")
    dataset = load_dataset(data)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        inputs = pipeline.load_model(args.model, weights).preprocessing.apply(dataset.images)
        calibration = inputs[np.random.default_rng(0).permutation(len(inputs))[: args.real_images]]
        recipe = build_recipe(samples=args.samples, synth_steps=args.steps)
        paths = fp32_ort_and_zsq(args.model, weights, calibration, recipe, dataset.head(64), folder)
        sessions = {key: make_session(str(path), execution=Execution.INTEGER, purpose="latency") for key, path in paths.items()}
        record: dict = {"bench": "vs_ort", "model": args.model, "ort_real_images": args.real_images, "zsq_distilled_samples": args.samples}
        for key, session in sessions.items():
            record[f"{key}_top1"] = top1(run_batched(validation_session(str(paths[key])), inputs), dataset.labels)
        for batch in (1, 64):
            sample = np.ascontiguousarray(inputs[:batch])
            times = {key: latency_ms(session, sample, repeats=50 if batch == 1 else 20) for key, session in sessions.items()}
            record[f"latency_ms_b{batch}"] = {key: round(value, 3) for key, value in times.items()}
            record[f"ratio_zsq_over_ort_b{batch}"] = round(times["zsq"] / times["ort"], 3)
            record[f"speedup_vs_fp32_b{batch}"] = {key: round(times["fp32"] / times[key], 3) for key in ("ort", "zsq")}
        record["size_bytes"] = {key: path.stat().st_size for key, path in paths.items()}
    record["zsq_minus_ort_points"] = round(100 * (record["zsq_top1"] - record["ort_top1"]), 3)
    emit_json(record)


if __name__ == "__main__":
    main()
