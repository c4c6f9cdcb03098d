"""Calibration inputs from `zsq-onnx synth` files and from real images; foreign ONNX files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from tests.conftest import parse_model, to_proto
from zsq_onnx.cli import main
from zsq_onnx.io.data import load_dataset
from zsq_onnx.models.digits_cnn import digits_split


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits_test.npz"
    test = digits_split("test")
    np.savez(path, images=test.images, labels=test.labels)
    return path


def test_synth_file_is_seeded_and_reused(tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (first, second):
        result = _invoke("synth", "digits-cnn", "-o", str(path), "--samples", "24", "--steps", "10", "--batch-size", "16", "--seed", "5")
        assert result.exit_code == 0, result.output
    with np.load(first) as a, np.load(second) as b:
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        assert a["inputs"].shape == (24, 1, 8, 8) and a["batch_sizes"].tolist() == [16, 8]
        assert json.loads(str(a["settings"]))["steps"] == 10 and len(a["bn_losses"]) == 3
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    result = _invoke("convert", "digits-cnn", "-o", str(out), "--synthetic-data", str(first), "--report", str(report), "--quiet")
    assert result.exit_code == 0, result.output
    content = json.loads(report.read_text())
    assert content["calibration"] == {"source": "distilled", "samples": 24, "synth_loss_start": pytest.approx(content["calibration"]["synth_loss_start"]), "synth_loss_end": pytest.approx(content["calibration"]["synth_loss_end"])}
    assert content["seconds"]["synth"] < 1.0


def test_synthetic_data_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, inputs=np.zeros((4, 3, 8, 8), np.float32), batch_sizes=np.array([4]), loss_curve=np.zeros(1), bn_names=np.array(["a"]), bn_losses=np.zeros(1), settings=np.array("{}"))
    result = _invoke("convert", "digits-cnn", "-o", str(tmp_path / "q.onnx"), "--synthetic-data", str(path))
    assert result.exit_code == 2 and "expects (1, 8, 8)" in result.stderr


def test_real_calibration_data_quantizes_a_model_without_batchnorm(tmp_path, digits_npz):
    rng = np.random.default_rng(0)

    def values(count: int) -> str:
        return ", ".join(f"{v:.4f}" for v in rng.standard_normal(count))

    model = parse_model(
        f"""
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 1, 8, 8] input) => (float[N, 10] logits)
        <float[4, 1, 3, 3] w = {{{values(36)}}}, float[10, 4] fc = {{{values(40)}}}>
        {{ c = Conv <pads = [1, 1, 1, 1]> (input, w)
          r = Relu (c)
          p = GlobalAveragePool (r)
          f = Flatten (p)
          logits = Gemm <transB = 1> (f, fc) }}
        """
    )
    path, out = tmp_path / "nobn.onnx", tmp_path / "q.onnx"
    onnx.save(model, path)
    flags = ["--input-scale", "0.0625", "--mean", "0.3", "--std", "0.4"]
    result = _invoke("convert", str(path), "-o", str(out), "--calibration-data", str(digits_npz), "--eval-data", str(digits_npz), "--json", *flags)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration"]["source"] == "real images"
    assert report["quantized"]["agreement"] > 0.9
    # bias correction gives the conv a bias (int32-quantized), not the output layer; the pool output is quantized before Flatten too
    assert report["quantized"]["quantizers"] == {"weights": 2, "biases": 1, "activations": 4}


def test_foreign_dynamo_export_with_flags(tmp_path, digits_npz):
    import torch

    from zsq_onnx.models.digits_cnn import build

    path = tmp_path / "foreign.onnx"
    torch.onnx.export(build(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=True, optimize=False, opset_version=21,
                      input_names=["x"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)
    flags = ["--input-scale", "0.0625", "--mean", "0.3", "--std", "0.4"]
    result = _invoke("convert", str(path), "-o", str(tmp_path / "q.onnx"), "--eval-data", str(digits_npz), "--samples", "64", "--synth-steps", "100", "--json", *flags)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fp32"]["top1"] > 0.97 and report["quantized"]["top1"] >= report["fp32"]["top1"] - 0.01


def test_foreign_onnx_without_preprocessing_needs_flags(tmp_path, digits_npz, digits):
    _, model, _ = digits
    stripped = to_proto(model)
    del stripped.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(stripped, path)
    result = _invoke("convert", str(path), "-o", str(tmp_path / "q.onnx"), "--eval-data", str(digits_npz))
    assert result.exit_code == 2 and "--mean" in result.stderr


def test_class_folder_dataset(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.fromarray(np.full((6, 5, 3), 40 * label + index, np.uint8)).save(tmp_path / name / f"{index}.png")
    data = load_dataset(tmp_path, (3, 4, 4))
    assert data.images.shape == (6, 4, 4, 3) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.images[4, 0, 0, 0] == 41


def test_grayscale_class_folder_feeds_a_one_channel_model(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.fromarray(np.full((10, 12), 200 if label == "a" else 30, np.uint8)).save(tmp_path / label / "0.png")
    data = load_dataset(tmp_path, (1, 8, 8))
    assert data.images.shape == (2, 8, 8, 1) and data.labels.tolist() == [0, 1] and data.images[0].min() == 200
