"""Fine-tuning data: the distilled pool against AdaDFQ's generator, on CIFAR-10 ResNet-20, ``sim``,
granular activations, per-channel weights, weights trained, under two protocols: ours (first
conv and last linear at 8 bits) and the papers' (every layer at k bits, --no-keep-ends-8bit).

Each run has the same wall-clock budget, synthesis included: the pool's distillation (``--pool``
samples, ``--synth-steps`` Adam steps) or the generator's warm-up, then calibration and KD
fine-tuning until the budget is spent. Runs go ``--jobs`` at a time, ``--threads`` torch threads
each, so every run shares the machine alike. Records top-1 of the emitted model in ORT on the
10k test images at the end (drop from FP32, agreement) and on an evenly spaced subset at
checkpoints (the curve); the summary sets the papers'-protocol drops beside the best published
zero-shot ones. Writes a PNG of top-1 against minutes and prints one JSON line.

    python bench/generator.py [--bits W4A4,W3A3] [--protocols ours,papers] [--minutes 15]
                              [--long-minutes 60] [--jobs 2] [--threads 1] [--png generator.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, emitted_scores, plot_top1_curves  # noqa: E402

MODEL = "resnet20-cifar10"
# Best published zero-shot drops on CIFAR-10 ResNet-20, papers' protocol (ALGORITHMS.md).
PUBLISHED_DROPS = {"W4A4": {"SynQ": 1.13, "AdaDFQ": 1.58}, "W3A3": {"SynQ": 5.78, "AdaDFQ": 9.00}}


@dataclasses.dataclass(frozen=True)
class Run:
    """One fine-tuning run of the comparison."""

    bits: str
    protocol: str
    synthesizer: str
    minutes: float

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.bits} {self.synthesizer} {self.minutes:g} min"


def run_one(run: Run, args: argparse.Namespace) -> dict:
    """Synthesize, calibrate and fine-tune within ``run.minutes``, then evaluate."""
    import torch

    from zsq_onnx import pipeline
    from zsq_onnx.executors.runtime import make_session, run_batched
    from zsq_onnx.io.data import load_dataset
    from zsq_onnx.recipe import FinetuneConfig, build_recipe
    from zsq_onnx.validate.metrics import top1

    torch.set_num_threads(args.threads)
    loaded = pipeline.load_model(MODEL, cifar_weights(MODEL))
    dataset = load_dataset(asset("data/cifar10_test.npz"), loaded.input_shape)
    inputs, labels = loaded.preprocessing.apply(dataset.images), dataset.labels
    subset = np.linspace(0, len(labels) - 1, min(args.curve_images, len(labels))).astype(int)  # every class: the file is sorted by class
    fp32_logits = run_batched(make_session(loaded.model), inputs)
    budget = run.minutes * 60
    finetune = FinetuneConfig(minutes=run.minutes, train_weights=True, samples=args.pool)
    recipe = build_recipe(bits=run.bits, profile="sim", granularity="granular", keep_ends_8bit=run.protocol == "ours", samples=args.samples,
                          synth_steps=args.synth_steps, synthesizer=run.synthesizer, finetune=finetune, seed=args.seed)
    start = time.perf_counter()
    calibration = pipeline.calibration_inputs(loaded, recipe, progress=False)
    synth_seconds = time.perf_counter() - start
    quantized = pipeline.quantize(loaded.model, pipeline.first_samples(calibration.batches, args.samples), recipe)
    setup = time.perf_counter() - start
    remaining = max(budget - setup, 1.0)
    recipe = dataclasses.replace(recipe, finetune=dataclasses.replace(finetune, minutes=remaining / 60))
    curve = [(setup / 60, emitted_scores(quantized, inputs[subset], labels[subset])["top1"])]

    def checkpoint(step: int, seconds: float, model) -> None:
        curve.append(((setup + seconds) / 60, emitted_scores(model, inputs[subset], labels[subset])["top1"]))

    tuned, result = pipeline.tune(loaded.model, quantized, calibration.inputs, recipe, progress=False, checkpoint=checkpoint,
                                  checkpoint_seconds=remaining / args.checkpoints, game=calibration.game)
    final = emitted_scores(tuned, inputs, labels, fp32_logits)
    fp32 = round(100 * top1(fp32_logits, labels), 2)
    record = {
        **dataclasses.asdict(run), "fp32_top1": fp32, **final, "drop": round(fp32 - final["top1"], 2), "synth_seconds": round(synth_seconds, 1),
        "setup_seconds": round(setup, 1), "finetune_steps": result.steps, "finetune_seconds": round(result.seconds, 1),
        "curve": [(round(minutes, 2), top) for minutes, top in curve[:-1]] + [(round((setup + result.seconds) / 60, 2), curve[-1][1])],
    }
    print(run.label, {k: v for k, v in record.items() if k != "curve"}, file=sys.stderr, flush=True)
    return record


def _summary(records: list[dict]) -> dict:
    """Generator minus pool top-1 per setting, and the papers'-protocol drops against the published ones."""
    found = {(r["protocol"], r["bits"], r["synthesizer"], r["minutes"]): r for r in records}
    summary = {}
    for (protocol, bits, synthesizer, minutes), record in sorted(found.items()):
        entry = {"top1": record["top1"], "drop": record["drop"], "agreement": record["agreement"], "finetune_steps": record["finetune_steps"]}
        pool = found.get((protocol, bits, "pool", minutes))
        if synthesizer == "generator" and pool is not None:
            entry["generator_minus_pool"] = round(record["top1"] - pool["top1"], 2)
        if protocol == "papers" and bits in PUBLISHED_DROPS:
            entry["drop_minus_published"] = {paper: round(record["drop"] - drop, 2) for paper, drop in PUBLISHED_DROPS[bits].items()}
        summary[f"{protocol} {bits} {synthesizer} {minutes:g} min"] = entry
    return summary


def _plot(records: list[dict], path: Path) -> None:
    panels: dict[str, dict] = {}
    for record in records:
        panel = panels.setdefault(f"{record['bits']}, {record['protocol']} protocol", {})
        panel[f"{record['synthesizer']} ({record['minutes']:g} min)"] = record["curve"]
    plot_top1_curves(dict(sorted(panels.items())), records[0]["fp32_top1"], "minutes, synthesis included",
                     f"{MODEL}: distilled pool vs AdaDFQ generator (sim, granular, weights trained)", path)


def main() -> None:
    """Run every setting, longest first, ``--jobs`` at a time, and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bits", default="W4A4,W3A3")
    parser.add_argument("--protocols", default="ours,papers")
    parser.add_argument("--synthesizers", default="pool,generator")
    parser.add_argument("--minutes", type=float, default=15.0, help="Budget of each run, synthesis included.")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="Budget of the extra generator run at W3A3, papers' protocol (0: none).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run.")
    parser.add_argument("--samples", type=int, default=64, help="Synthetic samples that calibrate.")
    parser.add_argument("--pool", type=int, default=256, help="Distilled samples in the pool.")
    parser.add_argument("--synth-steps", type=int, default=200, help="Distillation steps of the pool.")
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--curve-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="generator.png")
    args = parser.parse_args()
    runs = [Run(bits, protocol, synthesizer, args.minutes) for protocol in args.protocols.split(",") for bits in args.bits.split(",")
            for synthesizer in args.synthesizers.split(",")]
    if args.long_minutes > 0:
        runs.insert(0, Run("W3A3", "papers", "generator", args.long_minutes))
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as executor:
        records = list(executor.map(run_one, runs, [args] * len(runs)))
    _plot(records, Path(args.png))
    emit_json({"bench": "generator", "model": MODEL, "profile": "sim", "activations": "granular", "weights": "per-channel, trained",
               "jobs": args.jobs, "threads_per_run": args.threads, "pool": args.pool, "synth_steps": args.synth_steps, "samples": args.samples,
               "runs": records, "summary": _summary(records), "png": args.png})


if __name__ == "__main__":
    main()
