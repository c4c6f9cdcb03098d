"""Weight reconstruction on a CIFAR ResNet: nearest vs GPTQ vs AdaRound (layer mode) vs block
mode (``block``: BRECQ/QDrop, AdaRound rounding and activation steps learned per block) at low
bits, data-free (distilled calibration, ``--samples``, default 32), evaluated in ORT on the
first ``--images`` CIFAR-10 test images. Per setting, top-1, drop from FP32 and the seconds
``pipeline.quantize`` took (reconstruction included) go to stderr; one JSON line last.
``--threads`` sets torch's threads (block mode trains small blocks: one thread is fastest on a
shared machine).

    python bench/reconstruct.py [--model resnet20-cifar10] [--bits W4A8,W3A8,W2A8] [--rounding nearest,gptq,adaround,block] [--profile sim] [--images 2000]
                                [--samples 32] [--block-iterations 500] [--threads 1] [--no-keep-ends-8bit]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    parser.add_argument("--samples", type=int, default=None, help="distilled calibration samples (default: the recipe's)")
    parser.add_argument("--block-iterations", type=int, default=None, help="block mode: Adam steps per block (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    loaded = pipeline.load_model(args.model, cifar_weights(args.model))
    dataset = load_dataset(asset("data/cifar10_test.npz"), loaded.input_shape)
    inputs, labels = loaded.preprocessing.apply(dataset.images[: args.images]), dataset.labels[: args.images]
    fp32 = top1(run_batched(make_session(loaded.model), inputs), labels)
    start = time.perf_counter()
    base = build_recipe(profile=args.profile, seed=args.seed, samples=args.samples)
    batches = distill(loaded.model, loaded.input_shape, base.synth, args.seed, progress=False).batches
    record = {"bench": "reconstruct", "model": args.model, "profile": args.profile, "images": args.images, "keep_ends_8bit": args.keep_ends_8bit,
              "samples": base.synth.samples, "threads": args.threads, "fp32_top1": fp32, "distill_seconds": round(time.perf_counter() - start, 1), "settings": []}
    for bits in args.bits.split(","):
        for rounding in args.rounding.split(","):
            block = rounding == "block"
            recipe = build_recipe(bits=bits, profile=args.profile, seed=args.seed, keep_ends_8bit=args.keep_ends_8bit, samples=args.samples,
                                  weight_rounding="adaround" if block else rounding, reconstruct="block" if block else "layer")
            if block and args.block_iterations is not None:
                recipe = dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, block_iterations=args.block_iterations))
            start = time.perf_counter()
            quantized = pipeline.quantize(loaded.model, batches, recipe)
            seconds = time.perf_counter() - start
            accuracy = top1(run_batched(validation_session(emit(quantized)), inputs), labels)
            record["settings"].append({"bits": bits, "rounding": rounding, "top1": accuracy, "drop_points": round(100 * (fp32 - accuracy), 2), "quantize_seconds": round(seconds, 1),
                                      **({"block_iterations": recipe.reconstruct.block_iterations} if block else {})})
            print(record["settings"][-1], file=sys.stderr, flush=True)
    emit_json(record)


if __name__ == "__main__":
    main()
