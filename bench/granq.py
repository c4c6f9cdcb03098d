"""GranQ: top-1 of CIFAR ResNets at W5A5, W4A4, W3A3 with static per-tensor, granular and auto
activations (per-channel weights, first conv and last linear at 8 bits, no fine-tuning,
data-free: one shared set of distilled samples), on all 10k CIFAR-10 test images in ORT, for the
research ``sim`` profile (quantizers on weighted-op inputs only, as the reference prototype) and
the deployable ``ort-cpu`` profile (also residual-add and pool inputs); with the ORT CPU latency
of each ort-cpu graph at batch 64 as a ratio to FP32, measured side by side. Prints one JSON line.

    python bench/granq.py [--models resnet20-cifar10,resnet32-cifar10] [--bits W5A5,W4A4,W3A3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import Execution, latency_ms, make_session, run_batched  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.search.granularity import METADATA_KEY  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import validation_session  # noqa: E402
from zsq_onnx.validate.metrics import top1  # noqa: E402

MODES = ("static", "granular", "auto")
PROFILES = ("sim", "ort-cpu")


def _latency_ratio(fp32, quantized, sample: np.ndarray, rounds: int = 3) -> float:
    """Median over interleaved rounds of quantized / FP32 latency at this batch."""
    ratios = [latency_ms(quantized, sample, 10) / latency_ms(fp32, sample, 10) for _ in range(rounds)]
    return round(float(np.median(ratios)), 3)


def bench_model(name: str, bits_list: list[str], budget: float, samples: int, steps: int, seed: int, dataset) -> dict:
    """Every bits x mode x profile of one model, from one shared distilled set."""
    loaded = pipeline.load_model(name, cifar_weights(name))
    inputs = loaded.preprocessing.apply(dataset.images)
    fp32 = make_session(loaded.model)
    start = time.perf_counter()
    batches = distill(loaded.model, loaded.input_shape, build_recipe(samples=samples, synth_steps=steps).synth, seed, progress=False).batches
    record: dict = {"fp32_top1": top1(run_batched(fp32, inputs), dataset.labels), "synth_seconds": round(time.perf_counter() - start, 2)}
    sample = inputs[:64]
    for bits in bits_list:
        for profile in PROFILES:
            for mode in MODES:
                recipe = build_recipe(bits=bits, profile=profile, granularity=mode, granularity_budget=budget, seed=seed)
                start = time.perf_counter()
                quantized = pipeline.quantize(loaded.model, batches, recipe)
                seconds = time.perf_counter() - start
                emitted = emit(quantized)
                row = {"top1": top1(run_batched(validation_session(emitted), inputs), dataset.labels), "quantize_seconds": round(seconds, 2)}
                if profile == "ort-cpu":
                    row["latency_vs_fp32_b64"] = _latency_ratio(fp32, make_session(emitted, execution=Execution.INTEGER, purpose="latency"), sample)
                choice = pipeline.recorded_choice(quantized, METADATA_KEY)
                if choice is not None:
                    row["granular_tensors"] = sum(r["choice"] == "granular" for r in choice["tensors"])
                    row["auto_tensors"] = len(choice["tensors"])
                record[f"{bits} {profile} {mode}"] = row
                print(name, bits, profile, mode, row, file=sys.stderr, flush=True)
    return record


def main() -> None:
    """Run the grid and print it as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet20-cifar10,resnet32-cifar10")
    parser.add_argument("--bits", default="W5A5,W4A4,W3A3")
    parser.add_argument("--budget", type=float, default=0.3, help="--granularity-budget for auto")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_dataset(asset("data/cifar10_test.npz"))
    record: dict = {"bench": "granq", "budget": args.budget, "samples": args.samples, "synth_steps": args.steps}
    for name in args.models.split(","):
        record[name] = bench_model(name, args.bits.split(","), args.budget, args.samples, args.steps, args.seed, dataset)
    emit_json(record)


if __name__ == "__main__":
    main()
