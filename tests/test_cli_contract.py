"""The command-line contract end to end (issue 24, point 4): what cannot work is refused with one
line and exit 2 before any long work, a failed gate leaves nothing at the outputs, files get the
user's umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from tests.test_cli import RAW, TINY, _assert_bad_input, _conv_bn, _invoke
from zsq_onnx import distributed, launcher, pipeline
from zsq_onnx.errors import BadInputError
from zsq_onnx.io.onnx_io import write_files_atomic
from zsq_onnx.validate.metrics import agreement


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder holding a Conv-BN model that is not a classifier, labelled images for it
    and a file where a folder is expected."""
    monkeypatch.chdir(tmp_path)
    tmp_path.joinpath("model.onnx").write_bytes(_conv_bn().SerializeToString())
    np.savez(tmp_path / "small.npz", images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.zeros(2, np.int64))
    tmp_path.joinpath("blocker").write_text("a file, not a folder")
    return tmp_path


@pytest.fixture
def no_long_work(monkeypatch):
    """Conversion, distillation and the --nproc launcher fail the test when reached."""
    def reached(*args, **kwargs):
        raise AssertionError("the long work started")

    for module, name in ((pipeline, "convert"), (pipeline, "distill"), (launcher, "launch")):
        monkeypatch.setattr(module, name, reached)
    monkeypatch.setattr("zsq_onnx.synth.distill.distill", reached)


def _refused(folder, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    before = sorted(folder.rglob("*"))
    _assert_bad_input(_invoke(*args), *words)
    assert sorted(folder.rglob("*")) == before


CONVERT = ("convert", "digits-cnn", "-o", "out.onnx", *TINY)
BEFORE_CONVERTING = {
    "max-drop-negative": ((*CONVERT, "--max-drop", "-1"), ("--max-drop", "got -1")),
    "max-drop-over-100": ((*CONVERT, "--max-drop", "150"), ("--max-drop", "0 and 100")),
    "agreement-over-1": ((*CONVERT, "--min-agreement", "1.5"), ("--min-agreement", "0.95")),
    "agreement-negative": ((*CONVERT, "--min-agreement", "-0.1"), ("--min-agreement",)),
    "report-is-the-model": ((*CONVERT, "--report", "out.onnx"), ("out.onnx", "-o", "--report")),
    "report-named-md": ((*CONVERT, "--report", "r.md"), ("r.md", ".json")),
    "report-named-png": ((*CONVERT, "--report", "r.png"), ("r.png", ".json")),
    "model-at-the-report-png": (("convert", "digits-cnn", "-o", "r.png", "--report", "r.json"), ("r.png", "-o", "--report")),
    "output-is-the-input-model": (("convert", "model.onnx", "-o", "model.onnx", *RAW), ("model.onnx", "MODEL reads it")),
    "report-is-the-eval-data": ((*CONVERT, "--eval-data", "small.npz", "--report", "small.npz"), ("small.npz", "--eval-data reads it")),
    "output-under-a-file": (("convert", "digits-cnn", "-o", "blocker/out.onnx"), ("blocker/out.onnx", "cannot be written")),
    "synth-output-under-a-file": (("synth", "digits-cnn", "-o", "blocker/s.npz"), ("blocker/s.npz", "cannot be written")),
    "synth-output-is-the-model": (("synth", "model.onnx", "-o", "model.onnx"), ("model.onnx", "MODEL reads it")),
    "export-output-is-the-model": (("export", "model.onnx", "-o", "model.onnx"), ("model.onnx", "MODEL reads it")),
    "mean-without-std-before-workers": ((*CONVERT, "--mean", "0.5", "--nproc", "2"), ("--mean", "--std")),
    "synth-samples-0": (("synth", "digits-cnn", "-o", "s.npz", "--samples", "0"), ("synthesis settings", "samples 0")),
    "synth-steps-negative": (("convert", "digits-cnn", "-o", "out.onnx", "--synth-steps", "-3"), ("synthesis settings", "steps -3")),
    "seed-negative": ((*CONVERT, "--seed", "-1"), ("--seed",)),
}


@pytest.mark.parametrize("case", BEFORE_CONVERTING)
def test_refused_before_converting(folder, no_long_work, case):
    _refused(folder, *BEFORE_CONVERTING[case])


def test_device_cuda_without_cuda_is_refused_before_synthesis(folder, no_long_work, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(folder, (*CONVERT, "--device", "cuda", "--finetune-steps", "2"), ("--device cuda", "no CUDA"))


NOT_CHECKED = {
    "max-drop-without-labels": (("convert", "model.onnx", "-o", "out.onnx", *TINY, *RAW, "--max-drop", "1"), ("model.onnx", "--max-drop", "--eval-data")),
    "labels-for-a-model-that-is-not-a-classifier": (("convert", "model.onnx", "-o", "out.onnx", *TINY, *RAW, "--eval-data", "small.npz"),
                                                    ("model.onnx", "(N, classes)", "[2, 4, 4]")),
}


@pytest.mark.parametrize("case", NOT_CHECKED)
def test_what_cannot_be_measured_is_refused_at_load(folder, monkeypatch, case):
    def reached(*args, **kwargs):
        raise AssertionError("synthesis started")

    monkeypatch.setattr(pipeline, "calibration_inputs", reached)
    _refused(folder, *NOT_CHECKED[case])


def test_eval_of_a_model_that_is_not_a_classifier(folder):
    _refused(folder, ("eval", "model.onnx", "--data", "small.npz", *RAW), ("(N, classes)",))


def test_agreement_of_outputs_with_more_than_a_class_axis():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 2, 4, 4))
    assert agreement(maps, maps) == 1.0
    flipped = maps.copy()
    flipped[0] = -flipped[0]
    assert agreement(maps, flipped) == pytest.approx(2 / 3)
    logits = rng.normal(size=(4, 10))
    assert agreement(logits, logits) == 1.0
    with pytest.raises(BadInputError, match="class axis"):
        agreement(logits[:, 0], logits[:, 0])


IDLE = {
    "train-weights": ((*CONVERT, "--train-weights"), ("--train-weights does nothing without fine-tuning",)),
    "optimizer": ((*CONVERT, "--optimizer", "sgd"), ("--optimizer does nothing without fine-tuning",)),
    "finetune-lr": ((*CONVERT, "--finetune-lr", "0.1"), ("--finetune-lr does nothing without fine-tuning",)),
    "finetune-samples-from-a-file": ((*CONVERT, "--finetune-steps", "2", "--synthetic-data", "s.npz", "--finetune-samples", "64"),
                                     ("--finetune-samples does nothing", "--synthetic-data")),
    "percentile-with-minmax": ((*CONVERT, "--calibration-method", "minmax", "--calibration-percentile", "99.9"),
                               ("--calibration-percentile does nothing with --calibration-method minmax",)),
    "act-granularity-with-granular": ((*CONVERT, "--profile", "sim", "--granularity", "granular", "--act-granularity", "per-channel"),
                                      ("--act-granularity does nothing with --granularity granular",)),
    "budget-without-auto": ((*CONVERT, "--granularity-budget", "0.5"), ("--granularity-budget does nothing without --granularity auto",)),
    "mp-weight-bits-without-search": ((*CONVERT, "--mp-weight-bits", "4,8"), ("--mp-weight-bits does nothing without --mixed-precision",)),
    "generator-steps-with-pool": ((*CONVERT, "--generator-steps", "3"), ("--generator-steps does nothing with --synthesizer pool",)),
    "margins-without-fine-tuning": ((*CONVERT, "--synthesizer", "generator", "--margin-low", "0.2"), ("--margin-low does nothing without fine-tuning",)),
    "generator-steps-with-a-saved-generator": ((*CONVERT, "--synthesizer", "generator", "--synthetic-data", "g.pt", "--generator-steps", "3"),
                                               ("--generator-steps does nothing with --synthetic-data",)),
    "synth-steps-with-saved-inputs": ((*CONVERT, "--synthetic-data", "s.npz"), ("--synth-steps does nothing with --synthetic-data",)),
    "synth-steps-with-real-data": ((*CONVERT, "--calibration-data", "small.npz"), ("--synth-steps does nothing when nothing is distilled",)),
    "bits-overridden": ((*CONVERT, "--bits", "W4A4", "--wbits", "8", "--abits", "8"), ("--bits does nothing with both --wbits and --abits",)),
    "weights-of-an-onnx-model": (("convert", "model.onnx", "-o", "out.onnx", "--weights", "w.pt"), ("--weights does nothing for an .onnx MODEL",)),
    "synth-steps-for-the-generator": (("synth", "digits-cnn", "-o", "g.pt", "--synthesizer", "generator", "--steps", "3"),
                                      ("--steps does nothing with --synthesizer generator",)),
    "synth-generator-lr-for-the-pool": (("synth", "digits-cnn", "-o", "s.npz", "--generator-lr", "0.01"), ("--generator-lr does nothing with --synthesizer pool",)),
    "input-shape-of-a-zoo-model": ((*CONVERT, "--input-shape", "1,8,8"), ("--input-shape does nothing for a zoo MODEL",)),
    "synth-output-name-of-a-zoo-model": (("synth", "digits-cnn", "-o", "s.npz", "--output-name", "y"), ("--output-name does nothing for a zoo MODEL",)),
    "export-weights-of-an-onnx-model": (("export", "model.onnx", "-o", "fp32.onnx", "--weights", "w.pt"), ("--weights does nothing for an .onnx MODEL",)),
}


@pytest.mark.parametrize("case", IDLE)
def test_options_that_do_nothing_exit_2(folder, no_long_work, case):
    _refused(folder, *IDLE[case])


def test_the_same_options_pass_where_they_act(folder, monkeypatch):
    def captured(*args, **kwargs):
        raise BadInputError("captured")

    monkeypatch.setattr(pipeline, "convert", captured)
    for args in (("--finetune-steps", "2", "--train-weights", "--optimizer", "sgd", "--finetune-lr", "0.1", "--finetune-samples", "64"),
                 ("--calibration-method", "percentile", "--calibration-percentile", "99.9"),
                 ("--granularity", "auto", "--granularity-budget", "0.5", "--profile", "sim"),
                 ("--synthesizer", "generator", "--generator-steps", "3", "--finetune-steps", "2", "--margin-low", "0.2"),
                 ("--bits", "W4A4", "--wbits", "8")):
        _assert_bad_input(_invoke("convert", "digits-cnn", "-o", "out.onnx", *args), "captured")


USAGE = {
    "unknown-option": (("convert", "digits-cnn", "-o", "x.onnx", "--bogus"), ("convert:", "--bogus")),
    "unknown-group-option": (("--bogus", "convert"), ("--bogus",)),
    "unknown-command": (("compress",), ("compress",)),
    "missing-argument": (("convert",), ("MODEL",)),
    "missing-output": (("convert", "digits-cnn"), ("-o",)),
    "bad-choice": (("convert", "digits-cnn", "-o", "x.onnx", "--profile", "gpu"), ("--profile", "gpu")),
    "not-a-number": (("convert", "digits-cnn", "-o", "x.onnx", "--samples", "many"), ("--samples", "many")),
    "nproc-zero": (("synth", "digits-cnn", "-o", "s.npz", "--nproc", "0"), ("--nproc",)),
}


@pytest.mark.parametrize("case", USAGE)
def test_usage_errors_print_one_line(folder, no_long_work, case):
    args, words = USAGE[case]
    _refused(folder, args, ("error:", *words))


def test_no_command_shows_the_help():
    result = _invoke()
    assert result.exit_code == 0 and "Commands:" in result.stdout and not result.stderr


@pytest.mark.parametrize(("error", "code", "words"), [
    ("out of memory", 1, ("OutOfMemoryError", "CUDA out of memory")),
    ("peer", 4, ("rank 0", "another rank failed")),
])
def test_out_of_memory_in_a_collective_is_not_a_failed_peer(folder, monkeypatch, error, code, words):
    import torch

    def collective_fails(*args, **kwargs):
        def operation():
            if error == "out of memory":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer")

        distributed._collective(operation)

    monkeypatch.setattr(pipeline, "convert", collective_fails)
    result = _invoke(*CONVERT)
    assert result.exit_code == code, result.output
    line, = result.stderr.strip().splitlines()
    assert all(word in line for word in words), line


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_model_and_report_appear_together_with_the_users_umask(folder, umask_027):
    result = _invoke(*CONVERT, "--report", "r.json", "--min-agreement", "0.5")
    assert result.exit_code == 0, result.output
    written = {"out.onnx", "r.json", "r.md", "r.png"}
    assert written <= {path.name for path in folder.iterdir()}
    assert {name: _mode(folder / name) for name in written} == dict.fromkeys(written, umask_027)
    assert not [path for path in folder.iterdir() if path.name.endswith(".tmp")]
    result = _invoke("synth", "digits-cnn", "-o", "s.npz", "--samples", "4", "--steps", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert _mode(folder / "s.npz") == umask_027


def test_a_failed_gate_leaves_nothing_at_the_outputs(folder):
    result = _invoke(*CONVERT, "--bits", "W2A2", "--profile", "sim", "--no-keep-ends-8bit", "--min-agreement", "1", "--report", "r.json")
    assert result.exit_code == 3, result.output
    line, = result.stderr.strip().splitlines()
    assert "accuracy gate failed" in line and "out.rejected.onnx" in line and "r.rejected.json" in line
    names = {path.name for path in folder.iterdir()}
    assert not names & {"out.onnx", "r.json", "r.md", "r.png"}
    assert {"out.rejected.onnx", "r.rejected.json", "r.rejected.md", "r.rejected.png"} <= names


def test_files_written_together_all_or_none(tmp_path):
    first, second = tmp_path / "model.onnx", tmp_path / "blocker" / "r.json"
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(BadInputError, match="r.json: cannot be written"):
        write_files_atomic({first: b"model", second: b"{}"})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocker"]
    existing = tmp_path / "kept.txt"
    existing.write_text("old")
    existing.chmod(0o604)
    write_files_atomic({existing: b"new"})
    assert existing.read_text() == "new" and _mode(existing) == 0o604
