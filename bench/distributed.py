"""Data parallelism on this machine: 1 against 2 processes (torch.distributed, gloo) for CIFAR-10
ResNet-20 synthesis and fine-tuning, through the CLI as a user runs it (``--nproc 2``).

Synthesis: ``zsq-onnx synth`` of ``--samples`` inputs, by one process on one thread, one process
on every core (torch's default) and two processes of one thread each; the seconds are the
distillation's own (rank 0's, gather included), the wall time includes start-up. The pools must
be equal bit for bit.

Fine-tuning (W4A4, ``sim``, granular activations, weights trained, on the 2-process pool): one
process for ``--minutes`` gives the step count S; then one process and two processes each run
exactly S steps (the same global batches and schedule), and their top-1 on the 10k test images
must agree within 0.1 point. A step's communication is measured apart on two gloo ranks: the
all-reduce of the trainable parameters (what DDP sends) and the loop's small one (rank 0's
schedule); the rest of a step is compute. Prints one JSON line.

    python bench/distributed.py [--samples 256] [--synth-steps 200] [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import asset, cifar_weights, emit_json  # noqa: E402

MODEL = "resnet20-cifar10"
RECIPE = ["--bits", "W4A4", "--profile", "sim", "--granularity", "granular", "--train-weights", "--quiet"]
COMMUNICATION_REPEATS = 200


def zsq(args: list[str], threads: int | None = None) -> tuple[str, float]:
    """Run ``python -m zsq_onnx *args`` (``threads`` torch threads when given); stdout and wall seconds."""
    environment = dict(os.environ)
    environment.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "zsq_onnx", *args], capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        sys.exit(f"zsq-onnx {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout, time.perf_counter() - start


def synthesize(folder: Path, name: str, samples: int, steps: int, nproc: int, threads: int | None) -> dict:
    """One synthesis run: its pool file, distillation seconds and wall seconds."""
    output = folder / f"{name}.npz"
    stdout, wall = zsq(["synth", MODEL, "--weights", str(cifar_weights(MODEL)), "--samples", str(samples), "--steps", str(steps),
                        "--nproc", str(nproc), "--quiet", "-o", str(output)], threads)
    seconds = float(re.search(r"in ([0-9.]+) s", stdout).group(1))
    return {"processes": nproc, "threads_per_process": threads or max(1, os.cpu_count() // nproc), "seconds": seconds, "wall_seconds": round(wall, 1), "path": output}


def finetune(folder: Path, name: str, pool: Path, nproc: int, steps: int | None, minutes: float | None) -> dict:
    """One conversion with fine-tuning on ``pool``: steps, fine-tuning seconds, top-1 and agreement (%)."""
    report = folder / f"{name}.json"
    budget = ["--finetune-steps", str(steps)] if steps else ["--finetune-minutes", str(minutes)]
    _, wall = zsq(["convert", MODEL, "--weights", str(cifar_weights(MODEL)), "--synthetic-data", str(pool), "--eval-data", str(asset("data/cifar10_test.npz")),
                   *RECIPE, *budget, "--nproc", str(nproc), "--report", str(report), "-o", str(folder / f"{name}.onnx")])
    content = json.loads(report.read_text())
    tuned = content["finetune"]
    return {"processes": nproc, "steps": tuned["steps"], "seconds": tuned["seconds"], "seconds_per_step": round(tuned["seconds"] / tuned["steps"], 4),
            "top1": round(100 * content["quantized"]["top1"], 2), "agreement": round(100 * content["quantized"]["agreement"], 2),
            "fp32_top1": round(100 * content["fp32"]["top1"], 2), "stage_seconds": content["seconds"], "wall_seconds": round(wall, 1)}


def trainable_bytes(pool: Path) -> int:
    """Bytes of everything fine-tuning trains in the bench's recipe: what DDP all-reduces per step."""
    from zsq_onnx import pipeline
    from zsq_onnx.finetune.loop import trainable_names
    from zsq_onnx.recipe import build_recipe
    from zsq_onnx.synth.distill import load_synthetic

    loaded = pipeline.load_model(MODEL, cifar_weights(MODEL))
    recipe = build_recipe(bits="W4A4", profile="sim", granularity="granular")
    quantized = pipeline.quantize(loaded.model, load_synthetic(pool, loaded.input_shape).batches[:1], recipe)
    names = trainable_names(quantized, train_weights=True).all
    return sum(4 * value.const_value.size for name, value in quantized.graph.initializers.items() if name in names)


def _communication_rank(rank: int, port: int, size_bytes: int, folder: str) -> None:
    import torch

    from zsq_onnx import distributed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with distributed.joined():
        gradients = torch.ones(size_bytes // 4)
        timings = {"allreduce_ms": [], "control_ms": []}
        for _ in range(COMMUNICATION_REPEATS):
            start = time.perf_counter()
            distributed.sum_tensor(gradients)
            timings["allreduce_ms"].append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            distributed.from_main(lambda: [1.0, 0.5], 2)
            timings["control_ms"].append(1000 * (time.perf_counter() - start))
    if rank == 0:
        Path(folder, "communication.json").write_text(json.dumps({key: float(np.median(values)) for key, values in timings.items()}))


def communication(size_bytes: int, folder: Path) -> dict:
    """Median milliseconds on 2 gloo ranks of one step's collectives: the all-reduce of
    ``size_bytes`` and the loop's small one."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_communication_rank, args=(port, size_bytes, str(folder)), nprocs=2, start_method="spawn")
    return {key: round(value, 3) for key, value in json.loads((folder / "communication.json").read_text()).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--synth-steps", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = {name: synthesize(folder, name, args.samples, args.synth_steps, nproc, threads)
                for name, nproc, threads in (("one_process_one_thread", 1, 1), ("one_process", 1, None), ("two_processes", 2, None))}
        pools = {name: np.load(run.pop("path"))["inputs"] for name, run in runs.items()}
        two = runs["two_processes"]["seconds"]
        synthesis = {
            "samples": args.samples, "steps": args.synth_steps, **runs,
            "speedup_vs_one_core": round(runs["one_process_one_thread"]["seconds"] / two, 2),
            "speedup_vs_one_process_all_cores": round(runs["one_process"]["seconds"] / two, 2),
            "pool_bit_equal": all(pools[name].tobytes() == pools["two_processes"].tobytes() for name in pools),
        }
        pool = folder / "two_processes.npz"
        budget = finetune(folder, "budget", pool, 1, None, args.minutes)
        one = finetune(folder, "one", pool, 1, budget["steps"], None)
        both = finetune(folder, "two", pool, 2, budget["steps"], None)
        size = trainable_bytes(pool)
        collectives = communication(size, folder)
    step_ms = 1000 * both["seconds_per_step"]
    comm_ms = collectives["allreduce_ms"] + collectives["control_ms"]
    emit_json({
        "model": MODEL, "recipe": " ".join(RECIPE[:-1]), "cpus": os.cpu_count(),
        "synthesis": synthesis,
        "finetune": {
            "minutes_run": budget, "one_process": one, "two_processes": both,
            "speedup": round(one["seconds"] / both["seconds"], 2),
            "top1_difference": round(both["top1"] - one["top1"], 2),
        },
        "step_split_two_processes": {"trainable_bytes": size, "step_ms": round(step_ms, 2), **collectives,
                                     "communication_share": round(comm_ms / step_ms, 4), "compute_ms": round(step_ms - comm_ms, 2)},
        "targets": {"synthesis_speedup_min": 1.7, "pool_bit_equal": True, "top1_within": 0.1,
                    "met": {"synthesis_speedup_vs_one_core": synthesis["speedup_vs_one_core"] >= 1.7,
                            "synthesis_speedup_vs_one_process_all_cores": synthesis["speedup_vs_one_process_all_cores"] >= 1.7, "pool_bit_equal": synthesis["pool_bit_equal"],
                            "top1_within": abs(both["top1"] - one["top1"]) <= 0.1}},
    })


if __name__ == "__main__":
    main()
