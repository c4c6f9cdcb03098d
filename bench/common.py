"""Helpers shared by the bench scripts: asset paths and the JSON line they end with."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ASSETS = Path(os.environ.get("ZSQ_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
CIFAR_WEIGHTS = {"resnet20-cifar10": "resnet20_cifar10.pt", "resnet32-cifar10": "resnet32_cifar10.pt"}


def asset(relative: str) -> Path:
    """A file under ZSQ_ASSETS; exits with a clear message when it is missing."""
    path = ASSETS / relative
    if not path.exists():
        sys.exit(f"missing asset {path}: set ZSQ_ASSETS to the shared assets folder")
    return path


def cifar_weights(model: str) -> Path:
    """The pretrained weights file of a CIFAR zoo model."""
    if model not in CIFAR_WEIGHTS:
        sys.exit(f"no pretrained weights in the assets for {model}; choose one of {', '.join(CIFAR_WEIGHTS)}")
    return asset(f"models/{CIFAR_WEIGHTS[model]}")


def size_bytes(model: ir.Model | onnx.ModelProto) -> int:
    """Serialized size of a model, in bytes (an IR model as the report measures it)."""
    from zsq_onnx.validate.evaluate import serialized_bytes

    return serialized_bytes(model) if isinstance(model, ir.Model) else model.ByteSize()


def emitted_scores(model: ir.Model, inputs: np.ndarray, labels: np.ndarray, fp32_logits: np.ndarray | None = None) -> dict:
    """Top-1 (%) of ``model`` emitted and run in ORT on ``inputs``, agreement (%) with
    ``fp32_logits`` when given, and the emitted file's size."""
    from zsq_onnx.executors.runtime import run_batched
    from zsq_onnx.profiles import emit
    from zsq_onnx.validate.evaluate import validation_session
    from zsq_onnx.validate.metrics import agreement, top1

    emitted = emit(model)
    logits = run_batched(validation_session(emitted), inputs)
    scores = {"top1": round(100 * top1(logits, labels), 2)}
    if fp32_logits is not None:
        scores["agreement"] = round(100 * agreement(fp32_logits, logits), 2)
    return {**scores, "size_bytes": size_bytes(emitted)}


def plot_top1_curves(panels: dict[str, dict[str, list[tuple[float, float]]]], fp32_top1: float, xlabel: str, title: str, path: Path) -> None:
    """One panel per key of ``panels``, each a line per label of (minutes, top-1 %) points, with
    FP32's top-1 (%) dashed; written to ``path`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {label: f"C{index}" for index, label in enumerate(sorted({label for curves in panels.values() for label in curves}))}
    figure, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 4.5 * len(panels)), 4.5), squeeze=False)
    for axis, (panel, curves) in zip(axes[0], panels.items()):
        for label, points in sorted(curves.items()):
            axis.plot([m for m, _ in points], [t for _, t in points], marker="o", markersize=3, label=label, color=colors[label])
        axis.axhline(fp32_top1, color="black", linestyle="--", label="FP32")
        axis.set_title(panel, fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("top-1 (%), emitted model in ORT")
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def emit_json(record: dict) -> None:
    """Print the bench's result as one JSON line (the last line of its output)."""
    print(json.dumps(record), flush=True)


class _Reader(CalibrationDataReader):
    """Feeds ORT's calibrator batches of real, preprocessed images."""

    def __init__(self, inputs: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{"input": inputs[i : i + batch]} for i in range(0, len(inputs), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def ort_quantize_static(fp32_path: Path, calibration: np.ndarray, folder: Path) -> Path:
    """ORT's own W8A8 QDQ quantizer (per-channel, MinMax), after its recommended pre-processing."""
    prepared, output = folder / "ort_prepared.onnx", folder / "ort_w8a8.onnx"
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(
        str(prepared), str(output), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
    )
    return output


def fp32_ort_and_zsq(model: str, weights: Path, calibration: np.ndarray, recipe, eval_data, folder: Path) -> dict[str, Path]:
    """Write the FP32 model, ORT's quantize_static W8A8 calibrated on ``calibration`` (real,
    preprocessed images) and zsq's data-free model; return their paths by key."""
    from zsq_onnx import pipeline
    from zsq_onnx.io import onnx_io

    paths = {"fp32": folder / "fp32.onnx", "zsq": folder / "zsq.onnx"}
    onnx_io.save_onnx(pipeline.load_model(model, weights).model, paths["fp32"])
    paths["ort"] = ort_quantize_static(paths["fp32"], calibration, folder)
    pipeline.convert(model, paths["zsq"], recipe, weights=weights, eval_data=eval_data, progress=False)
    return paths
