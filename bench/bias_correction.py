"""Bias correction on and off, per model and profile: output SQNR, per-layer SQNR, top-1 drop and
agreement of the emitted W8A8 model in ORT, measured the same way on every CPU (see
``zsq_onnx.executors.runtime.Execution``), with the CPU features and how each evaluation ran.

Models: digits-cnn (its test split), ResNet-20 (2,000 CIFAR-10 test images) and
EfficientNet-Lite0 (the 500-image ImageNet sample, ``--imagenet-images``); each calibrated on one
distilled pool of the default recipe. Prints one JSON line last.

    python bench/bias_correction.py [--models digits-cnn resnet20-cifar10 efficientnet-lite0]
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
from zsq_onnx.executors.ort_graph import runtime_record  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.profiles import PROFILES, emit  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.synth.distill import distill  # noqa: E402
from zsq_onnx.validate.evaluate import evaluate  # noqa: E402

MODELS = ("digits-cnn", "resnet20-cifar10", "efficientnet-lite0")


def _model_and_data(name: str, imagenet_images: int) -> tuple:
    """(loaded model, preprocessed inputs, labels) of one bench model."""
    if name == "digits-cnn":
        loaded = pipeline.load_model(name)
        return loaded, loaded.preprocessing.apply(loaded.default_eval_data.images), loaded.default_eval_data.labels
    if name == "efficientnet-lite0":
        loaded, dataset = pipeline.load_model(name), load_dataset(asset("data/imagenet_sample500_224.npz"))
        chosen = np.arange(min(imagenet_images, len(dataset.labels)))
    else:
        loaded, dataset = pipeline.load_model(name, cifar_weights(name)), load_dataset(asset("data/cifar10_test.npz"))
        chosen = np.random.default_rng(0).permutation(len(dataset.labels))[:2000]
    return loaded, loaded.preprocessing.apply(dataset.images[chosen]), dataset.labels[chosen]


def _row(loaded, batches, profile: str, correction: bool, inputs: np.ndarray, labels: np.ndarray) -> dict:
    start = time.perf_counter()
    quantized = pipeline.quantize(loaded.model, batches, build_recipe(profile=profile, bias_correction=correction))
    evaluation = evaluate(loaded.model, emit(quantized), inputs, labels, "bench")
    return {
        "output_sqnr_db": round(evaluation.output_sqnr_db, 2),
        "layer_sqnr_db": [round(layer.sqnr_db, 1) for layer in evaluation.layers],
        "drop_points": round(100 * (evaluation.fp32.top1 - evaluation.quantized.top1), 2),
        "agreement": round(100 * evaluation.agreement, 2),
        "accuracy_execution": evaluation.execution["accuracy"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--imagenet-images", type=int, default=500)
    args = parser.parse_args()
    record: dict = {"bench": "bias_correction", **runtime_record(), "models": {}}
    for name in args.models:
        loaded, inputs, labels = _model_and_data(name, args.imagenet_images)
        recipe = build_recipe()
        batches = distill(loaded.model, loaded.input_shape, recipe.synth, recipe.seed, progress=False).batches
        rows = {}
        for profile in PROFILES:
            rows[profile] = {("on" if correction else "off"): _row(loaded, batches, profile, correction, inputs, labels) for correction in (True, False)}
            rows[profile]["never_lower"] = rows[profile]["on"]["output_sqnr_db"] >= rows[profile]["off"]["output_sqnr_db"]
            print(name, profile, rows[profile], file=sys.stderr, flush=True)
        record["models"][name] = rows
    emit_json(record)


if __name__ == "__main__":
    main()
