"""zsq-onnx with no data vs ONNX Runtime's quantize_static calibrated on 512 REAL images.

Both W8A8 QDQ (per-channel int8 weights, uint8 activations, MinMax), evaluated in ORT CPU on
all 10k CIFAR-10 test images, with latency at batch 1 and 64 measured in the same run and file
sizes. Prints one JSON line last.

    python bench/vs_ort.py --model resnet20-cifar10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.data import load_dataset  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402
from zsq_onnx.metrics import top1  # noqa: E402
from zsq_onnx.runtime import latency_ms, make_session, run_batched  # noqa: E402


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


def main() -> None:
    """Run both quantizers on one model and compare them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--real-images", type=int, default=512)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    weights, data = cifar_weights(args.model), asset("data/cifar10_test.npz")
    dataset = load_dataset(data)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        loaded = pipeline.load_model(args.model, weights)
        inputs = loaded.preprocessing.apply(dataset.images)
        fp32_path = folder / "fp32.onnx"
        onnx.save(loaded.model, fp32_path)
        calibration = inputs[np.random.default_rng(0).permutation(len(inputs))[: args.real_images]]
        ort_path = ort_quantize_static(fp32_path, calibration, folder)
        zsq_path = folder / "zsq_w8a8.onnx"
        recipe = build_recipe(samples=args.samples, synth_steps=args.steps)
        pipeline.convert(args.model, zsq_path, recipe, weights=weights, eval_data=dataset.head(64), progress=False)
        sessions = {key: make_session(str(path)) for key, path in (("fp32", fp32_path), ("ort", ort_path), ("zsq", zsq_path))}
        record: dict = {"bench": "vs_ort", "model": args.model, "ort_real_images": args.real_images, "zsq_distilled_samples": args.samples}
        for key, session in sessions.items():
            record[f"{key}_top1"] = top1(run_batched(session, inputs), dataset.labels)
        for batch in (1, 64):
            sample = np.ascontiguousarray(inputs[:batch])
            times = {key: latency_ms(session, sample, repeats=50 if batch == 1 else 20) for key, session in sessions.items()}
            record[f"latency_ms_b{batch}"] = {key: round(value, 3) for key, value in times.items()}
            record[f"ratio_zsq_over_ort_b{batch}"] = round(times["zsq"] / times["ort"], 3)
            record[f"speedup_vs_fp32_b{batch}"] = {key: round(times["fp32"] / times[key], 3) for key in ("ort", "zsq")}
        record["size_bytes"] = {key: path.stat().st_size for key, path in (("fp32", fp32_path), ("ort", ort_path), ("zsq", zsq_path))}
    record["zsq_minus_ort_points"] = round(100 * (record["zsq_top1"] - record["ort_top1"]), 3)
    emit_json(record)


if __name__ == "__main__":
    main()
