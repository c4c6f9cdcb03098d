"""Lookup-table weights (ASQ's POST, powers of two) against uniform weights, data-free, ``sim``
profile, granular activations, per-channel weights, first conv and last linear at 8 bits.

Per model (CIFAR-10 ResNets, on the 10k test images): FP32 top-1 and size; for each setting of
``--bits`` (W<weights>A<activations>) and weight quantizer in ``--quantizers``, the
top-1, agreement with FP32 and size on disk of the emitted model without fine-tuning and after
the same fine-tuning budget (``--minutes`` of KD, weights trained too; or exactly ``--steps``
steps, for an equal budget on a busy machine), from one distilled pool per model. The summary
gives POST minus uniform top-1 per setting and FP32 size over the emitted size. Prints one JSON
line last.

    python bench/post.py [--models resnet20-cifar10,resnet32-cifar10] [--bits W4A4,W3A4,W4A3,W3A3]
                         [--quantizers uniform,post,pot] [--minutes 15 | --steps N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, emitted_scores, size_bytes  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.recipe import FinetuneConfig, build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Every (bits, quantizer) setting of one model, from one distilled pool."""
    loaded = pipeline.load_model(name, cifar_weights(name))
    dataset = load_dataset(asset("data/cifar10_test.npz"), loaded.input_shape)
    inputs = loaded.preprocessing.apply(dataset.images)
    fp32_logits = run_batched(make_session(loaded.model), inputs)
    start = time.perf_counter()
    distilled = distill(loaded.model, loaded.input_shape, build_recipe(samples=args.pool, synth_steps=args.synth_steps).synth, args.seed, progress=False)
    record: dict = {"fp32_top1": round(100 * top1(fp32_logits, dataset.labels), 2), "fp32_size_bytes": size_bytes(loaded.model),
                    "synth_seconds": round(time.perf_counter() - start, 1), "settings": {}}
    batches = pipeline.first_samples(distilled.batches, args.samples)
    finetune = FinetuneConfig(steps=args.steps or 0, minutes=None if args.steps else args.minutes, train_weights=True, samples=args.pool)
    for bits in args.bits:
        for quantizer in args.quantizers:
            recipe = build_recipe(bits=bits, profile="sim", granularity="granular", weight_quantizer=quantizer, finetune=finetune, seed=args.seed)
            quantized = pipeline.quantize(loaded.model, batches, recipe)
            row = {"no_finetune": emitted_scores(quantized, inputs, dataset.labels, fp32_logits)}
            tuned, result = pipeline.tune(loaded.model, quantized, distilled.inputs, recipe, progress=False)
            row["finetuned"] = {**emitted_scores(tuned, inputs, dataset.labels, fp32_logits), "steps": result.steps, "seconds": round(result.seconds, 1)}
            record["settings"][f"{bits} {quantizer}"] = row
            print(name, bits, quantizer, row, file=sys.stderr, flush=True)
    record["summary"] = _summary(record, args)
    return record


def _summary(record: dict, args: argparse.Namespace) -> dict:
    """POST (and powers of two) minus uniform top-1 after fine-tuning, and FP32 size over each emitted size."""
    summary = {}
    settings = record["settings"]
    for bits in args.bits:
        uniform = settings.get(f"{bits} uniform")
        for quantizer in args.quantizers:
            row = settings[f"{bits} {quantizer}"]
            entry = {"size_ratio_vs_fp32": round(record["fp32_size_bytes"] / row["finetuned"]["size_bytes"], 2)}
            if uniform is not None and quantizer != "uniform":
                entry["top1_minus_uniform"] = round(row["finetuned"]["top1"] - uniform["finetuned"]["top1"], 2)
            summary[f"{bits} {quantizer}"] = entry
    return summary


def main() -> None:
    """Run the comparison and print it as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet20-cifar10,resnet32-cifar10")
    parser.add_argument("--bits", default="W4A4,W3A4,W4A3,W3A3", help="Comma-separated W<w>A<a> settings.")
    parser.add_argument("--quantizers", default="uniform,post,pot")
    parser.add_argument("--minutes", type=float, default=15.0, help="Fine-tuning minutes per setting.")
    parser.add_argument("--steps", type=int, default=None, help="Fine-tune exactly this many steps per setting instead of --minutes.")
    parser.add_argument("--samples", type=int, default=64, help="Distilled samples that calibrate.")
    parser.add_argument("--pool", type=int, default=256, help="Distilled samples that fine-tuning draws from.")
    parser.add_argument("--synth-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.bits = args.bits.split(",")
    args.quantizers = args.quantizers.split(",")
    record: dict = {"bench": "post", "profile": "sim", "activations": "granular", "finetune": {"steps": args.steps} if args.steps else {"minutes": args.minutes},
                    "samples": args.samples, "pool": args.pool, "synth_steps": args.synth_steps}
    for name in args.models.split(","):
        record[name] = bench_model(name, args)
    emit_json(record)


if __name__ == "__main__":
    main()
