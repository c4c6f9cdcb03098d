"""Top-1 of a CIFAR ResNet at W8A8, W6A6, W5A5, W4A8, W8A4, W4A4, W3A3 without fine-tuning
(sim profile, per-channel symmetric weights, per-tensor asymmetric activations, min/max on one
shared set of distilled samples, first conv and last linear at 8 bits), in ORT on all 10k CIFAR-10
test images, with file sizes. Prints one JSON line last.

    python bench/bits_sweep.py --model resnet20-cifar10 [--samples 64 --steps 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, size_bytes  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402

SETTINGS = ("W8A8", "W6A6", "W5A5", "W4A8", "W8A4", "W4A4", "W3A3")


def main() -> None:
    """Quantize once per setting from shared distilled data and evaluate each in ORT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    weights, dataset = cifar_weights(args.model), load_dataset(asset("data/cifar10_test.npz"))
    loaded = pipeline.load_model(args.model, weights)
    inputs = loaded.preprocessing.apply(dataset.images)
    start = time.perf_counter()
    config = build_recipe(samples=args.samples, synth_steps=args.steps, seed=args.seed).synth
    batches = distill(loaded.model, loaded.input_shape, config, args.seed, progress=False).batches
    record: dict = {
        "bench": "bits_sweep", "model": args.model, "profile": "sim", "samples": args.samples, "synth_steps": args.steps,
        "synth_seconds": round(time.perf_counter() - start, 2),
        "fp32_top1": top1(run_batched(make_session(loaded.model), inputs), dataset.labels),
        "fp32_size_bytes": size_bytes(loaded.model),
    }
    for setting in SETTINGS:
        model = emit(pipeline.quantize(loaded.model, batches, build_recipe(bits=setting, profile="sim", seed=args.seed)))
        record[setting] = {"top1": top1(run_batched(validation_session(model), inputs), dataset.labels), "size_bytes": size_bytes(model)}
        print(setting, record[setting], file=sys.stderr, flush=True)
    emit_json(record)


if __name__ == "__main__":
    main()
