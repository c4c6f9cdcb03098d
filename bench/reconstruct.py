"""Weight reconstruction at low bits: nearest vs GPTQ vs AdaRound (layer mode) vs block mode
(``block``: BRECQ/QDrop, AdaRound rounding and activation steps learned per block), data-free.

A CIFAR ResNet is evaluated in ORT on the first ``--images`` CIFAR-10 test images, EfficientNet-Lite0
on the first ``--images`` of the ImageNet sample. Calibration is distilled: one pool per
``--samples`` x ``--synth-steps`` pair (comma lists), so the table also says whether the pool's size
and distillation limit the result. Per setting, top-1, drop from FP32, agreement with FP32 and the
seconds ``pipeline.quantize`` took (reconstruction included) go to stderr; one JSON line last.
``--threads`` sets torch's threads (block mode trains small blocks: one thread is fastest on a
shared machine).

    python bench/reconstruct.py [--model resnet20-cifar10|resnet32-cifar10|efficientnet-lite0] [--bits W4A8,W3A8,W2A8]
                                [--rounding nearest,gptq,adaround,block] [--profile sim] [--images 2000] [--samples 32] [--synth-steps 20]
                                [--weight-range minmax,mse] [--granularity static] [--block-iterations 500] [--threads 1] [--no-keep-ends-8bit]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import DEFAULT_RECIPE, build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import agreement, top1  # noqa: E402

IMAGENET_MODELS = ("efficientnet-lite0",)


def _evaluation_data(model: str, images: int):
    """The loaded model and its preprocessed evaluation inputs and labels."""
    if model in IMAGENET_MODELS:
        loaded = pipeline.load_model(model)
        dataset = load_dataset(asset("data/imagenet_sample500_224.npz"))
    else:
        loaded = pipeline.load_model(model, cifar_weights(model))
        dataset = load_dataset(asset("data/cifar10_test.npz"), loaded.input_shape)
    return loaded, loaded.preprocessing.apply(dataset.images[:images]), dataset.labels[:images]


def _recipe(args: argparse.Namespace, bits: str, rounding: str, samples: int, steps: int, weight_range: str):
    block = rounding == "block"
    recipe = build_recipe(bits=bits, profile=args.profile, seed=args.seed, keep_ends_8bit=args.keep_ends_8bit, samples=samples, synth_steps=steps,
                          granularity=args.granularity, weight_range=weight_range, weight_rounding="adaround" if block else rounding, reconstruct="block" if block else "layer")
    if block and args.block_iterations is not None:
        recipe = dataclasses.replace(recipe, reconstruct=dataclasses.replace(recipe.reconstruct, block_iterations=args.block_iterations))
    return recipe


def main() -> None:
    """Run the table for one model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--bits", default="W4A8,W3A8,W2A8")
    parser.add_argument("--rounding", default="nearest,gptq,adaround")
    parser.add_argument("--profile", default="sim")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--no-keep-ends-8bit", dest="keep_ends_8bit", action="store_false")
    parser.add_argument("--granularity", default=DEFAULT_RECIPE.granularity.value, help="activations: static, granular or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", default=str(DEFAULT_RECIPE.synth.samples), help="distilled calibration samples, a comma list")
    parser.add_argument("--synth-steps", default=str(DEFAULT_RECIPE.synth.steps), help="distillation steps, a comma list")
    parser.add_argument("--weight-range", default=DEFAULT_RECIPE.weights.weight_range.value, help="weight ranges, a comma list (minmax, mse)")
    parser.add_argument("--block-iterations", type=int, default=None, help="block mode: Adam steps per block (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    loaded, inputs, labels = _evaluation_data(args.model, args.images)
    fp32_logits = run_batched(make_session(loaded.model), inputs)
    fp32 = top1(fp32_logits, labels)
    record = {"bench": "reconstruct", "model": args.model, "profile": args.profile, "images": len(labels), "keep_ends_8bit": args.keep_ends_8bit,
              "threads": args.threads, "fp32_top1": fp32, "settings": []}
    for samples in map(int, args.samples.split(",")):
        for steps in map(int, args.synth_steps.split(",")):
            start = time.perf_counter()
            pool = build_recipe(seed=args.seed, samples=samples, synth_steps=steps).synth
            batches = distill(loaded.model, loaded.input_shape, pool, args.seed, progress=False).batches
            distill_seconds = round(time.perf_counter() - start, 1)
            for bits, rounding, weight_range in itertools.product(args.bits.split(","), args.rounding.split(","), args.weight_range.split(",")):
                recipe = _recipe(args, bits, rounding, samples, steps, weight_range)
                start = time.perf_counter()
                quantized = pipeline.quantize(loaded.model, batches, recipe)
                seconds = time.perf_counter() - start
                logits = run_batched(validation_session(emit(quantized)), inputs)
                accuracy = top1(logits, labels)
                record["settings"].append({"samples": samples, "synth_steps": steps, "distill_seconds": distill_seconds, "bits": bits, "rounding": rounding,
                                           "weight_range": weight_range, "top1": accuracy, "drop_points": round(100 * (fp32 - accuracy), 2),
                                           "agreement": agreement(fp32_logits, logits), "quantize_seconds": round(seconds, 1),
                                           **({"block_iterations": recipe.reconstruct.block_iterations} if rounding == "block" else {})})
                print(record["settings"][-1], file=sys.stderr, flush=True)
    emit_json(record)


if __name__ == "__main__":
    main()
