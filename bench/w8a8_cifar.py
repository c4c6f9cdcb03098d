"""Data-free W8A8 on a CIFAR ResNet, evaluated in ORT on all 10k CIFAR-10 test images.

Reports FP32 top-1, data-free W8A8 top-1 (ort-cpu profile), the same calibrated on Gaussian
noise instead of distilled data, and seconds per stage; ``--sweep`` adds an accuracy/time table
over synthesis settings. Prints one JSON line last.

    python bench/w8a8_cifar.py --model resnet20-cifar10 [--samples 64 --steps 200] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402

SWEEP = ((32, 50), (32, 100), (64, 100), (64, 200), (64, 500), (128, 200))


def _quantized_top1(loaded, batches, recipe, inputs, labels) -> float:
    model = emit(pipeline.quantize(loaded.model, batches, recipe))
    return top1(run_batched(validation_session(model), inputs), labels)


def main() -> None:
    """Run the benchmark for one model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also tabulate top-1 and synthesis time over settings")
    args = parser.parse_args()
    weights, data = cifar_weights(args.model), asset("data/cifar10_test.npz")
    recipe = build_recipe(samples=args.samples, synth_steps=args.steps, synth_batch_size=args.batch_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        result = pipeline.convert(args.model, Path(folder) / "w8a8.onnx", recipe, weights=weights, eval_data=data, progress=False)
    record = {
        "bench": "w8a8_cifar",
        "model": args.model,
        "samples": args.samples,
        "synth_steps": args.steps,
        "fp32_top1": result.evaluation.fp32.top1,
        "w8a8_datafree_top1": result.evaluation.quantized.top1,
        "drop_points": round(100 * (result.evaluation.fp32.top1 - result.evaluation.quantized.top1), 3),
        "agreement": result.evaluation.agreement,
        "seconds": result.report["seconds"],
        "peak_memory_mb": result.report["peak_memory_mb"],
    }
    loaded = pipeline.load_model(args.model, weights)
    dataset = load_dataset(data)
    inputs = loaded.preprocessing.apply(dataset.images)
    noise = np.random.default_rng(args.seed).standard_normal((args.samples, *loaded.input_shape)).astype(np.float32)
    record["w8a8_gaussian_top1"] = _quantized_top1(loaded, [noise], recipe, inputs, dataset.labels)
    if args.sweep:
        table = []
        for samples, steps in SWEEP:
            config = build_recipe(samples=samples, synth_steps=steps, synth_batch_size=min(64, samples), seed=args.seed)
            start = time.perf_counter()
            synthetic = distill(loaded.model, loaded.input_shape, config.synth, args.seed, progress=False)
            seconds = time.perf_counter() - start
            table.append({"samples": samples, "steps": steps, "synth_seconds": round(seconds, 2), "top1": _quantized_top1(loaded, synthetic.batches, config, inputs, dataset.labels)})
            print(table[-1], file=sys.stderr, flush=True)
        record["sweep"] = table
    emit_json(record)


if __name__ == "__main__":
    main()
