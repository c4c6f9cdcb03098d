"""Weight reconstruction on a CIFAR ResNet: nearest vs GPTQ vs AdaRound (layer mode) at low
weight bits, data-free (distilled calibration, the default 32 samples), evaluated in ORT on the
first ``--images`` CIFAR-10 test images. Per setting, top-1, drop from FP32 and the seconds
``pipeline.quantize`` took (reconstruction included) go to stderr; one JSON line last.

    python bench/reconstruct.py [--model resnet20-cifar10] [--bits W4A8,W3A8,W2A8] [--rounding nearest,gptq,adaround] [--profile sim] [--images 2000]
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
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402


def main() -> None:
    """Run the table for one model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--bits", default="W4A8,W3A8,W2A8")
    parser.add_argument("--rounding", default="nearest,gptq,adaround")
    parser.add_argument("--profile", default="sim")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--no-keep-ends-8bit", dest="keep_ends_8bit", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loaded = pipeline.load_model(args.model, cifar_weights(args.model))
    dataset = load_dataset(asset("data/cifar10_test.npz"), loaded.input_shape)
    inputs, labels = loaded.preprocessing.apply(dataset.images[: args.images]), dataset.labels[: args.images]
    fp32 = top1(run_batched(make_session(loaded.model), inputs), labels)
    start = time.perf_counter()
    base = build_recipe(profile=args.profile, seed=args.seed)
    batches = distill(loaded.model, loaded.input_shape, base.synth, args.seed, progress=False).batches
    record = {"bench": "reconstruct", "model": args.model, "profile": args.profile, "images": args.images, "keep_ends_8bit": args.keep_ends_8bit,
              "fp32_top1": fp32, "distill_seconds": round(time.perf_counter() - start, 1), "settings": []}
    for bits in args.bits.split(","):
        for rounding in args.rounding.split(","):
            recipe = build_recipe(bits=bits, profile=args.profile, seed=args.seed, keep_ends_8bit=args.keep_ends_8bit, weight_rounding=rounding)
            start = time.perf_counter()
            quantized = pipeline.quantize(loaded.model, batches, recipe)
            seconds = time.perf_counter() - start
            accuracy = top1(run_batched(validation_session(emit(quantized)), inputs), labels)
            record["settings"].append({"bits": bits, "rounding": rounding, "top1": accuracy, "drop_points": round(100 * (fp32 - accuracy), 2), "quantize_seconds": round(seconds, 1)})
            print(record["settings"][-1], file=sys.stderr, flush=True)
    emit_json(record)


if __name__ == "__main__":
    main()
