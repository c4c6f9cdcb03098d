"""CLI contract: results on stdout, one-line errors with exit code 2, no partial outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from tests.conftest import parse_model
from zsq_onnx.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _assert_bad_input(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def _matmul_model() -> onnx.ModelProto:
    return parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 2] input) => (float[N, 2] y)
        <float[2, 2] w = {1., 2., 3., 4.}>
        { y = MatMul (input, w) }
        """
    )


def test_missing_file(tmp_path):
    out = tmp_path / "out.onnx"
    _assert_bad_input(_invoke("convert", str(tmp_path / "nope.onnx"), "-o", str(out)), "nope.onnx", "no such file")
    assert not out.exists()


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffthis is not protobuf" * 10)
    out = tmp_path / "out.onnx"
    _assert_bad_input(_invoke("convert", str(bad), "-o", str(out)), "bad.onnx", "not an ONNX model")
    assert not out.exists()


def test_onnx_without_batchnorm(tmp_path):
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 1, 4, 4] input) => (float[N, 2, 4, 4] y)
        <float[2, 1, 1, 1] w = {1., 2.}>
        { c = Conv (input, w)
          y = Relu (c) }
        """
    )
    path = tmp_path / "nobn.onnx"
    onnx.save(model, path)
    out = tmp_path / "out.onnx"
    _assert_bad_input(_invoke("convert", str(path), "-o", str(out)), "nobn.onnx", "BatchNormalization", "--calibration-data")
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_nan_weights(tmp_path):
    model = _matmul_model()
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.array([[1, np.nan], [0, 1]], np.float32), "w"))
    path = tmp_path / "nan.onnx"
    onnx.save(model, path)
    _assert_bad_input(_invoke("convert", str(path), "-o", str(tmp_path / "o.onnx")), "nan.onnx", "NaN")


def test_external_data_outside_model_folder(tmp_path):
    model = _matmul_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    path = tmp_path / "escape.onnx"
    path.write_bytes(model.SerializeToString())
    _assert_bad_input(_invoke("convert", str(path), "-o", str(tmp_path / "o.onnx")), "escape.onnx", "outside the model's folder")


def _conv_bn(inputs: str = "float[N, 1, 4, 4] input", outputs: str = "float[N, 2, 4, 4] y", opset: int = 21, ir: int = 10, value_info: str = "") -> onnx.ModelProto:
    """A Conv-BatchNorm-Relu model from ONNX text, unchecked: the bad files below fail the checks."""
    return onnx.parser.parse_model(
        f"""
        <ir_version: {ir}, opset_import: ["" : {opset}]>
        g ({inputs}) => ({outputs})
        <float[2, 1, 1, 1] w = {{1., 2.}}, float[2] s = {{1., 1.}}, float[2] b = {{0., 0.}}, float[2] m = {{0., 0.}}, float[2] v = {{1., 1.}}{value_info}>
        {{ c = Conv (input, w)
          n = BatchNormalization (c, s, b, m, v)
          y = Relu (n) }}
        """
    )


BAD_FILES = {
    "opset-newer-than-onnxruntime": ({"opset": 30}, ("onnxruntime", "ai.onnx 30")),
    "ir-version-newer-than-onnxruntime": ({"ir": 15}, ("onnxruntime", "IR version 15")),
    "input-channels-against-conv-weight": ({"inputs": "float[N, 3, 4, 4] input"}, ("contradict", "3 channels")),
    "output-against-graph": ({"outputs": "float[N, 5, 4, 4] y"}, ("contradict", "(2) vs (5)")),
    "value-info-against-graph": ({"value_info": ", float[N, 7, 4, 4] c"}, ("contradict", "(2) vs (7)")),
    "zero-channel-input": ({"inputs": "float[N, 0, 4, 4] input"}, ("empty", "[N, 0, 4, 4]")),
    "empty-input": ({"inputs": "float[N, 1, 0, 4] input"}, ("empty", "[N, 1, 0, 4]")),
}
COMMANDS = {
    "convert": ("convert", "{model}", "-o", "{out}", "--samples", "4", "--synth-steps", "1"),
    "inspect": ("inspect", "{model}"),
    "eval": ("eval", "{model}", "--data", "{data}", "--input-scale", "1", "--mean", "0", "--std", "1"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_onnx_files_exit_2_at_load(tmp_path, case, command):
    changes, words = BAD_FILES[case]
    path, data, out = tmp_path / f"{case}.onnx", tmp_path / "d.npz", tmp_path / "out.onnx"
    path.write_bytes(_conv_bn(**changes).SerializeToString())
    np.savez(data, images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.zeros(2, np.int64))
    _assert_bad_input(_invoke(*(arg.format(model=path, out=out, data=data) for arg in COMMANDS[command])), path.name, *words)
    assert sorted(tmp_path.iterdir()) == sorted([path, data])


def test_the_good_twin_of_the_bad_files_converts(tmp_path):
    path, out = tmp_path / "good.onnx", tmp_path / "out.onnx"
    path.write_bytes(_conv_bn().SerializeToString())
    result = _invoke("convert", str(path), "-o", str(out), "--samples", "4", "--synth-steps", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("convert", "no-such-model", "-o", "x.onnx"), ("no-such-model", "digits-cnn")),
        (("convert", "digits-cnn", "-o", "x.onnx", "--bits", "W9"), ("--bits",)),
        (("convert", "resnet20-cifar10", "-o", "x.onnx"), ("--weights",)),
        (("convert", "digits-cnn", "-o", "x.onnx", "--eval-data", "missing.npz"), ("missing.npz",)),
        (("eval", "missing.onnx", "--data", "d.npz"), ("missing.onnx",)),
    ],
)
def test_bad_arguments(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    _assert_bad_input(_invoke(*args), *words)
    assert not (tmp_path / "x.onnx").exists()


def test_convert_export_and_eval(tmp_path):
    from zsq_onnx.models.digits_cnn import digits_split

    test = digits_split("test")
    data = tmp_path / "digits.npz"
    np.savez(data, images=test.images, labels=test.labels)
    out, fp32 = tmp_path / "q.onnx", tmp_path / "fp32.onnx"
    result = _invoke("convert", "digits-cnn", "-o", str(out), "--samples", "64", "--synth-steps", "50", "--eval-data", str(data), "--quiet")
    assert result.exit_code == 0, result.output
    assert "FP32" in result.stdout and out.exists()
    assert _invoke("export", "digits-cnn", "-o", str(fp32)).exit_code == 0
    result = _invoke("eval", str(out), "--data", str(data), "--reference", str(fp32), "--json")
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["eval"]["samples"] == 360 and report["quantized"]["agreement"] > 0.95


def test_calibration_options_reach_the_recipe(monkeypatch):
    from zsq_onnx import pipeline
    from zsq_onnx.errors import BadInputError
    from zsq_onnx.recipe import Recipe

    seen: list[Recipe] = []

    def capture(model, output, recipe, **options):
        seen.append(recipe)
        raise BadInputError("captured")

    monkeypatch.setattr(pipeline, "convert", capture)
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", "x.onnx", "--calibration-method", "entropy", "--bias-correction"), "captured")
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", "x.onnx", "--calibration-method", "percentile", "--calibration-percentile", "99.9"), "captured")
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", "x.onnx"), "captured")
    assert [(r.calibration_method, r.calibration_percentile, r.bias_correction) for r in seen] == [
        ("entropy", 99.99, True), ("percentile", 99.9, True), ("percentile", 99.99, True)]
    assert _invoke("convert", "digits-cnn", "-o", "x.onnx", "--calibration-method", "minmax", "--no-bias-correction").exit_code == 2
    assert (seen[-1].calibration_method, seen[-1].bias_correction) == ("minmax", False)
    assert _invoke("convert", "digits-cnn", "-o", "x.onnx", "--calibration-method", "kl").exit_code == 2
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", "x.onnx", "--calibration-percentile", "30"), "--calibration-percentile")


def test_convert_reports_observer_and_bias_correction(tmp_path):
    import json

    out, report_path = tmp_path / "q.onnx", tmp_path / "r.json"
    result = _invoke("convert", "digits-cnn", "-o", str(out), "--samples", "16", "--synth-steps", "5", "--calibration-method", "mse",
                     "--bias-correction", "--report", str(report_path), "--quiet")
    assert result.exit_code == 0, result.output
    assert "activation ranges mse" in result.stdout and "bias correction on 3 layers" in result.stdout
    report = json.loads(report_path.read_text())
    ranges, correction = report["activation_ranges"], report["bias_correction"]
    assert ranges["method"] == "mse" and correction["enabled"] and len(correction["max_abs_shift"]) == 3  # the output layer keeps its bias
    assert ranges["tensors"] and all(0 <= row["clipped_fraction"] < 0.5 for row in ranges["tensors"])
    assert "## Activation ranges (mse)" in report_path.with_suffix(".md").read_text()


@pytest.mark.parametrize(("flags", "levels"), [((), set()), (("-v",), {"INFO"}), (("-vv",), {"INFO", "DEBUG"})])
def test_verbose_logs_on_stderr(tmp_path, flags, levels):
    import logging

    path = tmp_path / "good.onnx"
    path.write_bytes(_conv_bn().SerializeToString())
    result = _invoke(*flags, "eval", str(path), "--data", str(tmp_path / "missing.npz"), "--input-scale", "1", "--mean", "0", "--std", "1")
    assert result.exit_code == 2 and "missing.npz" in result.stderr.splitlines()[-1]
    logged = {line.split()[0] for line in result.stderr.splitlines()[:-1]}
    assert logged == levels
    if levels:
        assert f"INFO zsq_onnx.io.onnx_io: {path}: IR version 10" in result.stderr
    package = logging.getLogger("zsq_onnx")
    assert package.level == logging.NOTSET and not package.handlers  # restored after the command


def _wrong_inputs(folder) -> None:
    """Files a new user might pass by mistake, beside a 1x4x4 model and a 1x6x6 one."""
    import torch

    folder.joinpath("model.onnx").write_bytes(_conv_bn().SerializeToString())
    folder.joinpath("other.onnx").write_bytes(_conv_bn("float[N, 1, 6, 6] input", "float[N, 2, 6, 6] y").SerializeToString())
    labels = np.zeros(2, np.int64)
    np.savez(folder / "small.npz", images=np.zeros((2, 4, 4, 1), np.uint8), labels=labels)
    np.savez(folder / "big.npz", images=np.zeros((2, 32, 32, 1), np.uint8), labels=labels)
    np.savez(folder / "rgb.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=labels)
    np.savez(folder / "named.npz", images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.array(["cat", "dog"]))
    np.savez(folder / "empty-synth.npz", inputs=np.zeros((0, 1, 8, 8), np.float32), batch_sizes=np.zeros(0, np.int64), loss_curve=np.zeros(0),
             bn_names=np.array([], str), bn_losses=np.zeros(0), settings=np.array("{}"))
    folder.joinpath("folder").mkdir()
    torch.save({"fc.weight": torch.zeros(2, 2)}, folder / "other.pt")


RAW = ("--input-scale", "1", "--mean", "0", "--std", "1")
TINY = ("--samples", "8", "--synth-steps", "2", "--quiet")
FEW = ("--samples", "8", "--quiet")  # where nothing is distilled, --synth-steps would be refused as doing nothing
WRONG_INPUTS = {
    "eval-data-of-another-size": (("eval", "model.onnx", "--data", "big.npz", *RAW), ("big.npz", "32x32", "4x4")),
    "eval-data-of-other-channels": (("eval", "model.onnx", "--data", "rgb.npz", *RAW), ("rgb.npz", "3 channel(s)", "takes 1")),
    "eval-preprocessing-of-other-channels": (("eval", "model.onnx", "--data", "rgb.npz", "--input-scale", "1", "--mean", "0,0,0", "--std", "1,1,1"),
                                             ("rgb.npz", "3 channel(s)", "takes 1")),
    "eval-reference-of-another-input": (("eval", "model.onnx", "--data", "small.npz", "--reference", "other.onnx", *RAW), ("other.onnx", "(1, 6, 6)")),
    "eval-labels-not-class-indices": (("eval", "model.onnx", "--data", "named.npz", *RAW), ("named.npz", "class indices")),
    "eval-data-of-another-size-in-convert": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--eval-data", "big.npz"), ("big.npz", "32x32", "8x8")),
    "calibration-data-of-another-size": (("convert", "digits-cnn", "-o", "out.onnx", *FEW, "--calibration-data", "big.npz"), ("big.npz", "32x32", "8x8")),
    "weights-of-another-model": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--weights", "other.pt"), ("other.pt", "does not fit digits-cnn")),
    "weights-not-a-state-dict": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--weights", "other.onnx"), ("other.onnx", "weights-only checkpoint")),
    "missing-weights": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--weights", "missing.pt"), ("missing.pt", "no such weights file")),
    "empty-synthetic-data": (("convert", "digits-cnn", "-o", "out.onnx", *FEW, "--synthetic-data", "empty-synth.npz"), ("empty-synth.npz", "no inputs")),
    "output-is-a-folder": (("convert", "digits-cnn", "-o", "folder", *TINY), ("folder", "is a folder")),
    "report-is-a-folder": (("convert", "digits-cnn", "-o", "out.onnx", "--report", "folder", *TINY), ("folder", "is a folder")),
    "synth-output-is-a-folder": (("synth", "digits-cnn", "-o", "folder", "--samples", "2", "--steps", "1", "--quiet"), ("folder", "is a folder")),
    "zero-weight-bits": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--wbits", "0"), ("bit width", "got 0")),
    "zero-input-scale": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--input-scale", "0", "--mean", "0", "--std", "1"), ("--input-scale",)),
    "agreement-in-percent": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--min-agreement", "95"), ("--min-agreement", "0.95")),
    "generator-and-real-calibration-data": (("convert", "digits-cnn", "-o", "out.onnx", *FEW, "--synthesizer", "generator", "--calibration-data", "small.npz"),
                                            ("--calibration-data", "--synthesizer generator")),
    "generator-file-not-a-generator": (("convert", "digits-cnn", "-o", "out.onnx", *FEW, "--synthesizer", "generator", "--synthetic-data", "other.pt"),
                                       ("other.pt", "not a generator")),
    "generator-for-a-model-that-is-not-a-classifier": (("convert", "model.onnx", "-o", "out.onnx", *FEW, *RAW, "--synthesizer", "generator"),
                                                       ("--synthesizer generator", "(N, classes)")),
    "generator-read-as-a-pool": (("convert", "digits-cnn", "-o", "out.onnx", *FEW, "--synthetic-data", "other.pt"), ("other.pt", "--synthesizer generator")),
    "generator-margins-reversed": (("convert", "digits-cnn", "-o", "out.onnx", *TINY, "--synthesizer", "generator", "--margin-low", "0.9", "--margin-high", "0.2"),
                                   ("--margin-low", "--margin-high")),
}


@pytest.mark.parametrize("case", WRONG_INPUTS)
def test_wrong_inputs_exit_2_with_one_line(tmp_path, monkeypatch, case):
    args, words = WRONG_INPUTS[case]
    _wrong_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    _assert_bad_input(_invoke(*args), *words)
    assert sorted(tmp_path.rglob("*")) == before


def test_post_weights_convert_inspect_and_refuse_what_cannot_run_them(tmp_path):
    import json

    out = tmp_path / "post.onnx"
    result = _invoke("convert", "digits-cnn", "-o", str(out), "--bits", "W4A8", "--profile", "sim", "--weight-quantizer", "post", "--no-keep-ends-8bit",
                     "--samples", "16", "--synth-steps", "5", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    notes = report["notes"]
    assert report["lookup_tables"]["layers"] >= 2 and 0 < report["lookup_tables"]["bytes"] < report["size_bytes"]["quantized"]
    assert any("post weights are stored as 4-bit codes (uint4 on disk)" in note and "float kernels" in note for note in notes), notes
    inspected = _invoke("inspect", str(out))
    assert inspected.exit_code == 0 and "table post 4-bit (x alpha): -1, -0.7071, -0.5" in inspected.stdout
    rows = json.loads(_invoke("inspect", str(out), "--json").stdout)["quantizers"]
    assert {row["levels"] for row in rows if row["role"] == "weight"} == {"post"}
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", str(out), "--profile", "tensorrt", "--weight-quantizer", "pot"), "tensorrt", "int8 QDQ only")
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", str(out), "--weight-quantizer", "post", "--weight-asymmetric"), "symmetric")
    _assert_bad_input(_invoke("convert", "digits-cnn", "-o", str(out), "--weight-quantizer", "post", "--mixed-precision", "--avg-wbits", "4"), "--mixed-precision")
    assert _invoke("convert", "digits-cnn", "-o", str(out), "--weight-quantizer", "apot").exit_code == 2


def test_generator_is_saved_by_synth_and_reused_by_convert(tmp_path):
    import json

    generator = tmp_path / "gen.pt"
    result = _invoke("synth", "digits-cnn", "-o", str(generator), "--synthesizer", "generator", "--generator-steps", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "trained the generator 3 steps" in result.stdout and generator.is_file()
    out = tmp_path / "q.onnx"
    result = _invoke("convert", "digits-cnn", "-o", str(out), "--bits", "W4A4", "--profile", "sim", "--synthesizer", "generator", "--synthetic-data", str(generator),
                     "--samples", "8", "--finetune-steps", "3", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration"]["source"] == "generated" and report["recipe"]["synth"]["synthesizer"] == "generator"
    assert report["finetune"]["steps"] == 3 and report["finetune"]["generator_loss_end"] is not None
