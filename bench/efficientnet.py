"""Data-free W8A8 EfficientNet-Lite0: FP32 vs quantized (ort-cpu profile) in ONNX Runtime.

Reports top-1 agreement and output SQNR on the distilled samples, seconds per stage, and, when
``ZSQ_IMAGENET`` names an .npz of labelled 224x224 RGB images (``images`` uint8 NHWC,
``labels``), FP32 and W8A8 top-1 on them. Needs the ``zoo`` extra. Prints one JSON line last.

    python bench/efficientnet.py [--samples 32] [--steps 100] [--batch-size 32] [--eval-limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from zsq_onnx import pipeline
from zsq_onnx.data import load_dataset
from zsq_onnx.recipe import Recipe, SynthConfig
from zsq_onnx.validate import evaluate

MODEL = "efficientnet-lite0"


def imagenet_top1(quantized, limit: int | None) -> dict:
    """FP32 and W8A8 top-1 and agreement on the ZSQ_IMAGENET images (the first ``limit``)."""
    dataset = load_dataset(os.environ["ZSQ_IMAGENET"])
    dataset = dataset.head(limit) if limit else dataset
    loaded = pipeline.load_model(MODEL)
    result = evaluate(loaded.model, quantized, loaded.preprocessing.apply(dataset.images), dataset.labels, dataset.name)
    return {"images": result.samples, "fp32_top1": result.fp32["top1"], "w8a8_top1": result.quantized["top1"], "agreement": result.agreement}


def main() -> None:
    """Convert efficientnet-lite0 data-free at W8A8 and print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=None, help="use only the first N ZSQ_IMAGENET images")
    args = parser.parse_args()
    recipe = Recipe(synth=SynthConfig(samples=args.samples, steps=args.steps, batch_size=args.batch_size), seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        result = pipeline.convert(MODEL, Path(folder) / "w8a8.onnx", recipe, progress=False)
    record = {
        "bench": "efficientnet",
        "model": MODEL,
        "threads": torch.get_num_threads(),
        "samples": args.samples,
        "synth_steps": args.steps,
        "batch_size": args.batch_size,
        "distilled_agreement": result.evaluation.agreement,
        "distilled_output_sqnr_db": round(result.evaluation.output_sqnr_db, 2),
        "seconds": result.report["seconds"],
        "imagenet": None,
    }
    if os.environ.get("ZSQ_IMAGENET"):
        start = time.perf_counter()
        record["imagenet"] = imagenet_top1(result.model, args.eval_limit)
        record["seconds"]["imagenet_eval"] = round(time.perf_counter() - start, 3)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
