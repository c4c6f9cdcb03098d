"""Data parallelism over torch.distributed: 2 gloo processes on CPU give what one process gives
(the gathered pool bit for bit, reduced ranges and histograms exactly, one DDP fine-tuning step
and the sharded evaluation within float tolerance), and a failure on one rank stops every rank
with a non-zero exit and no output file. ``make test`` spawns ranks for the pool, the ranges,
the DDP step and one ``--nproc 2`` convert; the other spawns are marked extended (``make test-all``)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zsq_onnx import distributed, launcher

WORLD = 2


def test_one_process_is_the_identity() -> None:
    assert distributed.world() == distributed.World()
    assert list(distributed.shard(5)) == [0, 1, 2, 3, 4]
    assert distributed.part(7) == slice(0, 7)
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    assert distributed.from_main(lambda: [1.0, 0.5], 2) == [1.0, 0.5]
    assert distributed.map_shards(2, lambda index: "ab"[index]) == ["a", "b"]
    assert distributed.rank_seed(7) == 7
    with distributed.joined() as group:
        assert not group.distributed and group.main


def test_batch_seeds_depend_on_the_seed_and_the_index_only() -> None:
    seeds = {distributed.batch_seed(seed, index) for seed in range(3) for index in range(50)}
    assert len(seeds) == 150
    assert distributed.batch_seed(1, 4) == distributed.batch_seed(1, 4)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_the_launcher_reports_the_rank_that_failed_on_its_own() -> None:
    from types import SimpleNamespace

    stopped = SimpleNamespace(exitcode=4, timestamp=10, message="error: rank 0: stopped because another rank failed", error_file_data={"message": "x"})
    cause = SimpleNamespace(exitcode=2, timestamp=11, message="error: bad input", error_file_data={"message": "x"})
    killed = SimpleNamespace(exitcode=-15, timestamp=9, message="", error_file_data={})
    assert launcher._root_failure({0: stopped, 1: cause, 2: killed}) == (2, "error: bad input")
    assert launcher._root_failure({0: killed}) == (1, "error: rank 0 was killed by signal 15")
    silent = SimpleNamespace(exitcode=1, timestamp=1, message="", error_file_data={})
    assert launcher._root_failure({3: silent}) == (1, "error: rank 3 exited with code 1")


def test_workers_get_the_command_line_without_nproc() -> None:
    from zsq_onnx.cli import _without_nproc

    assert _without_nproc(["-v", "convert", "m", "--nproc", "2", "-o", "x.onnx", "--nproc=3"]) == ["-v", "convert", "m", "-o", "x.onnx"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_environment(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _worker(rank: int, port: int, function, args: tuple, folder: str) -> None:
    import torch

    torch.set_num_threads(1)
    _rank_environment(rank, port)
    with distributed.joined():
        result = function(*args)
    Path(folder, f"{rank}.pkl").write_bytes(pickle.dumps(result))


def run_ranks(function, *args, folder: Path) -> list:
    """``function(*args)`` on each of WORLD gloo ranks (spawned processes); their results."""
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(_free_port(), function, args, str(folder)), nprocs=WORLD, start_method="spawn")
    return [pickle.loads(Path(folder, f"{rank}.pkl").read_bytes()) for rank in range(WORLD)]


def run_single(function, *args):
    """``function(*args)`` in this process, on one thread as each rank runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(threads)


def _digits():
    from zsq_onnx import pipeline

    return pipeline.load_model("digits-cnn")


def distilled_pool(samples: int, batch_size: int) -> tuple[np.ndarray, list[float], dict]:
    from zsq_onnx.recipe import build_recipe
    from zsq_onnx.synth.distill import distill

    loaded = _digits()
    result = distill(loaded.model, loaded.input_shape, build_recipe(samples=samples, synth_steps=4, synth_batch_size=batch_size).synth, seed=3, progress=False)
    return result.inputs, result.loss_curve, result.final_bn_losses


@pytest.mark.slow
def test_gathered_pool_equals_the_single_process_pool(tmp_path: Path) -> None:
    single = run_single(distilled_pool, 40, 16)  # batches of 16, 16 and 8: rank 0 distils two, rank 1 one
    for inputs, curve, losses in run_ranks(distilled_pool, 40, 16, folder=tmp_path):
        assert inputs.tobytes() == single[0].tobytes()
        assert curve == single[1]
        assert losses == single[2]


def calibrated(method: str) -> tuple[dict, dict, dict]:
    from zsq_onnx.passes import apply_passes
    from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
    from zsq_onnx.plan.calibrate import calibrate_ranges, input_means
    from zsq_onnx.quantizers.spec import QuantSpec

    loaded = _digits()
    folded = apply_passes(loaded.model, FoldBatchNormPass())
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, *loaded.input_shape)).astype(np.float32) for n in (7, 16, 1)]
    names = [node.outputs[0].name for node in folded.graph if node.op_type in ("Conv", "Relu", "Gemm")]
    specs = {name: QuantSpec(bits=4, symmetric=index % 2 == 0) for index, name in enumerate(names)}  # histograms of 2 bin counts
    calibration = calibrate_ranges(folded, specs, batches, method, per_channel={names[0]})
    means = input_means(folded, {node.name for node in folded.graph if node.op_type in ("Conv", "Gemm")}, batches)
    return calibration.ranges, calibration.clipped, means


METHODS = ("minmax", "entropy", "mse")


def calibrated_by_each_method() -> dict[str, tuple[dict, dict, dict]]:
    """:func:`calibrated` for every method, in one group (one spawn of the ranks for all)."""
    return {method: calibrated(method) for method in METHODS}


@pytest.mark.slow
def test_reduced_ranges_equal_the_single_process_ranges(tmp_path: Path) -> None:
    single = calibrated_by_each_method()
    for found in run_ranks(calibrated_by_each_method, folder=tmp_path):
        for method, (ranges, clipped, means) in single.items():
            rank_ranges, rank_clipped, rank_means = found[method]
            assert rank_ranges.keys() == ranges.keys(), method
            for name, (low, high) in ranges.items():
                np.testing.assert_array_equal(rank_ranges[name][0], low, err_msg=f"{method} {name}")
                np.testing.assert_array_equal(rank_ranges[name][1], high, err_msg=f"{method} {name}")
            assert rank_clipped == clipped, method
            for node, mean in means.items():
                np.testing.assert_allclose(rank_means[node], mean, rtol=1e-12, atol=1e-12, err_msg=f"{method} {node}")


def tuned_one_step(train_weights: bool) -> tuple[dict[str, np.ndarray], list[float]]:
    from zsq_onnx import pipeline
    from zsq_onnx.recipe import FinetuneConfig, build_recipe

    loaded = _digits()
    recipe = build_recipe(bits="W4A4", profile="sim", granularity="granular", samples=32, synth_steps=3,
                          finetune=FinetuneConfig(steps=1, samples=32, batch_size=15, train_weights=train_weights))
    calibration = pipeline.calibration_inputs(loaded, recipe, progress=False)
    quantized = pipeline.quantize(loaded.model, calibration.batches, recipe)
    tuned, result = pipeline.tune(loaded.model, quantized, calibration.inputs, recipe, progress=False)
    values = {name: value.const_value.numpy() for name, value in tuned.graph.initializers.items()}
    return values, result.loss_curve + result.agreement_curve


def tuned_both_ways() -> dict[bool, tuple[dict[str, np.ndarray], list[float]]]:
    """:func:`tuned_one_step` without and with trained weights, in one group (one spawn for both)."""
    return {train_weights: tuned_one_step(train_weights) for train_weights in (False, True)}


@pytest.mark.slow
def test_one_ddp_step_equals_the_single_process_step(tmp_path: Path) -> None:
    single = run_single(tuned_both_ways)  # a global batch of 15: 7 and 8 samples per rank
    for found in run_ranks(tuned_both_ways, folder=tmp_path):
        for train_weights, (values, curves) in single.items():
            rank_values, rank_curves = found[train_weights]
            np.testing.assert_allclose(rank_curves, curves, rtol=1e-5, err_msg=f"train_weights={train_weights}")
            for name, value in values.items():
                np.testing.assert_allclose(rank_values[name], value, rtol=1e-5, atol=1e-7, err_msg=f"train_weights={train_weights} {name}")


def generator_warmed_up() -> tuple[dict[str, np.ndarray], np.ndarray]:
    from zsq_onnx import pipeline
    from zsq_onnx.recipe import GeneratorConfig, build_recipe

    recipe = build_recipe(samples=24, synth_batch_size=8, synthesizer="generator", generator=GeneratorConfig(warmup_steps=2, batch_size=6))
    result = pipeline.generated_inputs(_digits(), recipe, progress=False)
    parameters = {name: value.detach().numpy().copy() for name, value in result.game.generator.named_parameters()}
    return parameters, result.inputs


@pytest.mark.extended
def test_generator_ranks_stay_in_step(tmp_path: Path) -> None:
    (first, first_inputs), (second, second_inputs) = run_ranks(generator_warmed_up, folder=tmp_path)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert first_inputs.shape == (24, 1, 8, 8)
    np.testing.assert_array_equal(first_inputs, second_inputs)


def auto_choices() -> tuple[dict, dict]:
    from zsq_onnx import pipeline
    from zsq_onnx.recipe import MixedPrecisionConfig, build_recipe
    from zsq_onnx.search.granularity import METADATA_KEY as GRANULARITY_KEY
    from zsq_onnx.search.mixed_precision import METADATA_KEY as PRECISION_KEY

    loaded = _digits()
    recipe = build_recipe(samples=16, synth_steps=2, granularity="auto", mixed_precision=MixedPrecisionConfig(enabled=True, avg_wbits=5))
    quantized = pipeline.quantize(loaded.model, pipeline.calibration_inputs(loaded, recipe, progress=False).batches, recipe)
    return pipeline.recorded_choice(quantized, GRANULARITY_KEY), pipeline.recorded_choice(quantized, PRECISION_KEY)


@pytest.mark.extended
def test_searches_choose_alike_on_every_rank(tmp_path: Path) -> None:
    (first_granularity, first_bits), (second_granularity, second_bits) = run_ranks(auto_choices, folder=tmp_path)
    assert first_granularity == second_granularity  # the timings are rank 0's
    assert [layer["bits"] for layer in first_bits["layers"]] == [layer["bits"] for layer in second_bits["layers"]]


def evaluated() -> dict:
    from zsq_onnx import pipeline
    from zsq_onnx.profiles import emit
    from zsq_onnx.recipe import build_recipe
    from zsq_onnx.validate.evaluate import evaluate

    loaded = _digits()
    recipe = build_recipe(bits="W4A4", samples=16, synth_steps=2)
    calibration = pipeline.calibration_inputs(loaded, recipe, progress=False)
    emitted = emit(pipeline.quantize(loaded.model, calibration.batches, recipe))
    data = loaded.default_eval_data
    evaluation = evaluate(loaded.model, emitted, loaded.preprocessing.apply(data.images[:301]), data.labels[:301], "digits")
    return evaluation.to_dict()


@pytest.mark.extended
def test_sharded_evaluation_equals_the_single_process_one(tmp_path: Path) -> None:
    single = evaluated()
    for found in run_ranks(evaluated, folder=tmp_path):
        for section in ("fp32", "quantized"):
            for key in ("top1", "top5", "agreement"):
                if key in single[section]:
                    assert found[section][key] == single[section][key], (section, key)
        assert found["quantized"]["output_sqnr_db"] == pytest.approx(single["quantized"]["output_sqnr_db"], rel=1e-9)
        assert [layer["sqnr_db"] for layer in found["layers"]] == pytest.approx([layer["sqnr_db"] for layer in single["layers"]], rel=1e-9)
        assert found["eval"] == single["eval"]


def failing_conversion(output: str, failing_rank: int) -> int:
    """The CLI's convert, with the quantize stage failing on ``failing_rank`` alone; its exit code."""
    from zsq_onnx import cli, pipeline
    from zsq_onnx.errors import BadInputError

    if distributed.requested_size() > 1 and int(os.environ["RANK"]) == failing_rank:
        def broken(*args, **kwargs):
            raise BadInputError("a rank-local failure")

        pipeline.quantize = broken
    return cli.main.main(["convert", "digits-cnn", "-o", output, "--samples", "16", "--synth-steps", "2"], standalone_mode=False)


def _cli_worker(rank: int, port: int, output: str, failing_rank: int, folder: str) -> None:
    _rank_environment(rank, port)
    Path(folder, f"{rank}.code").write_text(str(failing_conversion(output, failing_rank)))


@pytest.mark.extended
@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_failing_rank_stops_every_rank_without_output(failing_rank: int, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    output = tmp_path / "out.onnx"
    mp.start_processes(_cli_worker, args=(_free_port(), str(output), failing_rank, str(tmp_path)), nprocs=WORLD, start_method="spawn")
    codes = {rank: int((tmp_path / f"{rank}.code").read_text()) for rank in range(WORLD)}
    assert codes[failing_rank] == 2
    assert all(code != 0 for code in codes.values()), codes
    assert not output.exists()
    assert not list(tmp_path.glob("*.onnx*"))


def _zsq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zsq_onnx", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_nproc_converts_on_two_processes(tmp_path: Path) -> None:
    output, report = tmp_path / "out.onnx", tmp_path / "report.json"
    done = _zsq("convert", "digits-cnn", "-o", str(output), "--report", str(report), "--samples", "16", "--synth-steps", "2", "--finetune-steps", "2",
                "--nproc", "2", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1
    content = json.loads(report.read_text())
    assert content["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert content["finetune"]["steps"] == 2
    assert {"synth", "quantize", "finetune", "validate"} <= content["seconds"].keys()


@pytest.mark.extended
def test_nproc_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"
    done = _zsq("convert", "digits-cnn", "-o", str(output), "--weights", str(tmp_path / "missing.pt"), "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: "), done.stderr
    assert not output.exists()


@pytest.mark.extended
def test_torchrun_synth_equals_one_process(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    common = ["synth", "digits-cnn", "--samples", "40", "--steps", "3", "--batch-size", "16"]
    alone = _zsq(*common, "-o", str(tmp_path / "one.npz"), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "zsq_onnx", *common, "-o", str(tmp_path / "two.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        assert one["inputs"].tobytes() == two["inputs"].tobytes()
