"""ZeroQ mixed precision against uniform weight bits at the same size, data-free, ``sim`` profile,
8-bit activations, first conv and last linear at 8 bits in both.

Per model: FP32 top-1; for each average weight width A in ``--avg-bits``, the top-1 of the
mixed-precision model chosen within ``--avg-wbits A`` and of uniform WA A8, each without and
(``--finetune-minutes`` > 0) with that many minutes of KD fine-tuning on the distilled pool; the
search seconds (sensitivity + frontier), the weight sizes on disk; and the agreement with FP32.
CIFAR ResNets run on the 10k CIFAR-10 test images, EfficientNet-Lite0 on the 500-image ImageNet
sample (judge it by the drop from FP32 and agreement). One distilled set per model is shared.
Prints one JSON line last.

    python bench/mixed_precision.py [--models resnet20-cifar10,resnet32-cifar10,efficientnet-lite0]
        [--avg-bits 3,4,5] [--finetune-minutes 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CIFAR_WEIGHTS, asset, cifar_weights, emit_json, size_bytes  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import FinetuneConfig, MixedPrecisionConfig, build_recipe  # noqa: E402
from zsq_onnx.search.mixed_precision import METADATA_KEY  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import agreement, top1  # noqa: E402

DATA = {"efficientnet-lite0": "data/imagenet_sample500_224.npz"}


def _scores(model, inputs: np.ndarray, labels: np.ndarray, fp32_logits: np.ndarray) -> dict:
    emitted = emit(model)
    logits = run_batched(validation_session(emitted), inputs)
    return {"top1": top1(logits, labels), "agreement": agreement(fp32_logits, logits), "size_bytes": size_bytes(emitted)}


def bench_model(name: str, avg_bits: list[float], finetune_minutes: float, samples: int, steps: int, seed: int) -> dict:
    """Mixed vs uniform at each average width, from one shared distilled set."""
    loaded = pipeline.load_model(name, cifar_weights(name) if name in CIFAR_WEIGHTS else None)
    dataset = load_dataset(asset(DATA.get(name, "data/cifar10_test.npz")), loaded.input_shape)
    inputs = loaded.preprocessing.apply(dataset.images)
    fp32_logits = run_batched(make_session(loaded.model), inputs)
    pool_size = max(samples, 256) if finetune_minutes > 0 else samples
    start = time.perf_counter()
    distilled = distill(loaded.model, loaded.input_shape, build_recipe(samples=pool_size, synth_steps=steps).synth, seed, progress=False)
    record: dict = {"fp32_top1": top1(fp32_logits, dataset.labels), "eval_samples": len(inputs), "synth_seconds": round(time.perf_counter() - start, 1)}
    batches = pipeline.first_samples(distilled.batches, samples)
    finetune = FinetuneConfig(minutes=finetune_minutes, train_weights=True) if finetune_minutes > 0 else None
    for width in avg_bits:
        settings = {
            "mixed": build_recipe(bits="W8A8", profile="sim", seed=seed, mixed_precision=MixedPrecisionConfig(enabled=True, avg_wbits=width)),
            "uniform": build_recipe(bits=f"W{round(width)}A8", profile="sim", seed=seed),
        }
        for kind, recipe in settings.items():
            start = time.perf_counter()
            quantized = pipeline.quantize(loaded.model, batches, recipe)
            row = {"quantize_seconds": round(time.perf_counter() - start, 1), **_scores(quantized, inputs, dataset.labels, fp32_logits)}
            choice = quantized.metadata_props.get(METADATA_KEY)
            if choice is not None:
                recorded = json.loads(choice)
                point = recorded["frontier"][recorded["chosen"]]
                row.update(search_seconds=round(sum(recorded["seconds"].values()), 2), avg_wbits=round(point["avg_wbits"], 3), bits={layer["node"]: layer["bits"] for layer in recorded["layers"]})
            if finetune is not None:
                tuned, _ = pipeline.tune(loaded.model, quantized, distilled.inputs, build_recipe(bits="W8A8", profile="sim", seed=seed, finetune=finetune), progress=False)
                row["finetuned"] = _scores(tuned, inputs, dataset.labels, fp32_logits)
            record[f"{kind} {width:g}"] = row
            print(name, kind, width, row, file=sys.stderr, flush=True)
    return record


def main() -> None:
    """Run the comparison and print it as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet20-cifar10,resnet32-cifar10,efficientnet-lite0")
    parser.add_argument("--avg-bits", default="3,4,5")
    parser.add_argument("--finetune-minutes", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    widths = [float(text) for text in args.avg_bits.split(",")]
    record: dict = {"bench": "mixed_precision", "profile": "sim", "activation_bits": 8, "finetune_minutes": args.finetune_minutes,
                    "samples": args.samples, "synth_steps": args.steps}
    for name in args.models.split(","):
        record[name] = bench_model(name, widths, args.finetune_minutes, args.samples, args.steps, args.seed)
    emit_json(record)


if __name__ == "__main__":
    main()
