"""ORT CPU latency of FP32 vs zsq's ort-cpu W8A8 vs ORT quantize_static's W8A8, batch 1 and 64,
measured in one run with interleaved repeats. Prints one JSON line last.

    python bench/latency.py --model resnet20-cifar10 [--reduce-range]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json, fp32_ort_and_zsq  # noqa: E402

from zsq_onnx import pipeline  # noqa: E402
from zsq_onnx.executors.runtime import Execution, make_session  # noqa: E402
from zsq_onnx.io.data import load_dataset  # noqa: E402
from zsq_onnx.recipe import build_recipe  # noqa: E402


def _interleaved_ms(sessions: dict, sample: np.ndarray, rounds: int, per_round: int) -> dict[str, float]:
    """Median per-run milliseconds of each session, alternating sessions round by round."""
    name = next(iter(sessions.values())).get_inputs()[0].name
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for session in sessions.values():
        session.run(None, {name: sample})
    for _ in range(rounds):
        for key, session in sessions.items():
            start = time.perf_counter()
            for _ in range(per_round):
                session.run(None, {name: sample})
            times[key].append((time.perf_counter() - start) / per_round * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    """Build the three models and time them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--reduce-range", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    weights, data = cifar_weights(args.model), asset("data/cifar10_test.npz")
    dataset = load_dataset(data)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        inputs = pipeline.load_model(args.model, weights).preprocessing.apply(dataset.images[:512])
        recipe = build_recipe(samples=32, synth_steps=100, reduce_range=args.reduce_range)
        paths = fp32_ort_and_zsq(args.model, weights, inputs, recipe, dataset.head(64), folder)
        sessions = {key: make_session(str(path), execution=Execution.INTEGER, purpose="latency") for key, path in paths.items()}
        record: dict = {"bench": "latency", "model": args.model, "reduce_range": args.reduce_range}
        for batch, per_round in ((1, 50), (64, 3)):
            times = _interleaved_ms(sessions, np.ascontiguousarray(inputs[:batch]), args.rounds, per_round)
            record[f"b{batch}_ms"] = {key: round(value, 3) for key, value in times.items()}
            record[f"b{batch}_zsq_speedup_vs_fp32"] = round(times["fp32"] / times["zsq"], 3)
            record[f"b{batch}_zsq_over_ort"] = round(times["zsq"] / times["ort"], 3)
    emit_json(record)


if __name__ == "__main__":
    main()
