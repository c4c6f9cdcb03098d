"""ONNX files as users bring them: any opset ORT runs, fixed batch and image sizes, several
outputs, initializers listed as inputs, folded BatchNorm. Small hand-built files; the files of
torch's exporters are in test_exporter_corpus.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from zsq_onnx.cli import main
from zsq_onnx.errors import BadInputError
from zsq_onnx.io.foreign import CONVERSION_KEY, ForeignOptions, prepare, restore_interface, upgrade_opset
from zsq_onnx.io.onnx_io import image_input_shape

FAST = ("--samples", "4", "--synth-steps", "1", "--no-bias-correction", "--quiet")


def _initializers(seed: int = 0) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    arrays = {
        "w": rng.normal(size=(4, 3, 3, 3)), "s": rng.uniform(0.5, 1.5, 4), "b": rng.normal(size=4) * 0.1,
        "m": rng.normal(size=4) * 0.1, "v": rng.uniform(0.5, 1.5, 4),
    }
    return [numpy_helper.from_array(value.astype(np.float32), name) for name, value in arrays.items()]


def _stem(batch: int | str = "N", image: tuple = (3, 8, 8)) -> tuple[list[onnx.NodeProto], onnx.ValueInfoProto]:
    """Conv-BatchNorm-Relu-GlobalAveragePool: p [batch, 4, 1, 1]."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
    ]
    return nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *image])


def _model(nodes, inputs, outputs, opset: int, ir_version: int = 7, initializers=None) -> onnx.ModelProto:
    """A checked model; below IR version 4 its initializers are graph inputs too, as ONNX required then."""
    initializers = _initializers() if initializers is None else initializers
    if ir_version < 4:
        inputs = [*inputs, *(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def _attribute_ops(opset: int, batch: int | str = "N") -> onnx.ModelProto:
    """Squeeze/Split/Unsqueeze with axes as attributes and Softmax at its old default axis (1,
    over the flattened trailing dimensions): what changed at opset 13."""
    nodes, x = _stem(batch)
    nodes += [
        helper.make_node("Squeeze", ["p"], ["q"], axes=[2, 3]),
        helper.make_node("Split", ["q"], ["a", "a2"], axis=1, split=[2, 2]),
        helper.make_node("Unsqueeze", ["a"], ["ua"], axes=[1]),
        helper.make_node("Unsqueeze", ["a2"], ["ub"], axes=[1]),
        helper.make_node("Concat", ["ua", "ub"], ["u"], axis=1),
        helper.make_node("Softmax", ["u"], ["z"]),
        helper.make_node("Flatten", ["z"], ["y"]),
    ]
    return _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], opset, ir_version=3 if opset < 9 else 7)


def _plain(opset: int, batch: int | str = "N", image: tuple = (3, 8, 8), ir_version: int = 8) -> onnx.ModelProto:
    """Conv-BN-Relu-GAP-Flatten: ops whose form every opset shares."""
    nodes, x = _stem(batch, image)
    nodes.append(helper.make_node("Flatten", ["p"], ["y"]))
    return _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], opset, ir_version)


def _bytes(model: ir.Model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString()


def _run(model: onnx.ModelProto | bytes, x: np.ndarray) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _images(batch: int, shape: tuple = (3, 8, 8), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _one_line_exit_2(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize("opset", [7, 11, 12])
def test_opsets_before_13_convert_at_load_and_compute_the_same(opset):
    model = _attribute_ops(opset)
    prepared = prepare(model, "m.onnx")
    assert prepared.opset_imports[""] == 21
    assert f"opset {opset} -> 21 by onnx.version_converter" in prepared.metadata_props[CONVERSION_KEY]
    x = _images(3)
    np.testing.assert_allclose(_run(_bytes(prepared), x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-6)


def test_an_opset_newer_than_the_quantizers_is_converted_down():
    model = _plain(23, ir_version=10)
    prepared = prepare(model, "m.onnx")
    assert prepared.opset_imports[""] == 21
    x = _images(2)
    np.testing.assert_allclose(_run(_bytes(prepared), x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-6)


def test_an_op_the_converter_cannot_convert_is_bad_input_naming_it():
    node = helper.make_node("Scan", ["x"], ["y"], num_scan_inputs=1, body=helper.make_graph([], "body", [], []))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    with pytest.raises(BadInputError, match=r"scan\.onnx: onnx\.version_converter cannot convert it from opset 8 to 21: Scan from opset 8 to 9"):
        upgrade_opset(model, "scan.onnx")


@pytest.mark.parametrize("opset", [11, 12])
def test_cli_converts_an_old_opset_file_and_says_the_opset_changed(tmp_path, opset):
    path, out = tmp_path / f"opset{opset}.onnx", tmp_path / "q.onnx"
    onnx.save(_attribute_ops(opset), path)
    result = _invoke("convert", path, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert f"the emitted model is opset 21; {path} was opset {opset} (converted at load by onnx.version_converter)" in result.stderr
    emitted = onnx.load(out)
    assert [(entry.domain, entry.version) for entry in emitted.opset_import if entry.domain in ("", "ai.onnx")] == [("", 21)]
    assert _run(emitted, _images(5))[0].shape == (5, 4)


def test_initializers_listed_as_graph_inputs_are_constants():
    model = _plain(9, ir_version=3)
    assert len(model.graph.input) == 6
    prepared = prepare(model, "m.onnx")
    assert [value.name for value in prepared.graph.inputs] == ["x"]
    assert image_input_shape(prepared, "m.onnx") == (3, 8, 8)


def test_fixed_batch_is_freed_for_the_stages_and_restored_on_the_emitted_model(tmp_path):
    path, out = tmp_path / "fixed.onnx", tmp_path / "q.onnx"
    onnx.save(_plain(17, batch=2), path)
    prepared = prepare(onnx.load(path), str(path))
    assert str(prepared.graph.inputs[0].shape[0]) == "batch"
    assert _run(_bytes(prepared), _images(5))[0].shape == (5, 4)
    result = _invoke("convert", path, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    emitted = onnx.load(out)
    assert [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*emitted.graph.input, *emitted.graph.output)] == [[2, 3, 8, 8], [2, 4]]
    assert _run(emitted, _images(2))[0].shape == (2, 4)
    data = tmp_path / "data.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), labels=np.arange(5) % 4)
    evaluated = _invoke("eval", out, "--data", data, "--reference", path, "--input-scale", "255", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["eval"]["samples"] == 5, "a fixed-batch model is evaluated at any batch size"


def test_dynamic_reshape_head_runs_at_any_batch(tmp_path):
    """The legacy exporter's ``x.view(x.size(0), -1)``: Shape, Gather, Unsqueeze, Concat, Reshape."""
    nodes, x = _stem()
    nodes += [
        helper.make_node("Shape", ["p"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["count"], axis=0),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["count", "axes"], ["count1"]),
        helper.make_node("Constant", [], ["rest"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["count1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["f"]),
        helper.make_node("Identity", ["f"], ["y"]),
    ]
    path, out = tmp_path / "view.onnx", tmp_path / "q.onnx"
    onnx.save(_model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], 13), path)
    result = _invoke("convert", path, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert _run(onnx.load(out), _images(3))[0].shape == (3, 4)


def test_a_batch_size_built_into_the_graph_is_bad_input(tmp_path):
    nodes, x = _stem(batch=2)
    offsets = numpy_helper.from_array(np.ones((2, 4), np.float32), "offsets")
    nodes += [helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Add", ["f", "offsets"], ["y"])]
    path = tmp_path / "baked.onnx"
    onnx.save(_model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], 17, initializers=[*_initializers(), offsets]), path)
    _one_line_exit_2(_invoke("convert", path, "-o", tmp_path / "q.onnx", *FAST), "baked.onnx", "batch size 2 is built into the graph", "dynamic batch axis")


def test_nhwc_input_read_through_a_transpose_converts_as_nchw_and_keeps_its_layout(tmp_path):
    """tf2onnx's layout: an NHWC input, then Transpose<perm=[0, 3, 1, 2]>."""
    nodes, _ = _stem()
    nodes.insert(0, helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Flatten", ["p"], ["y"]))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])
    model = _model(nodes, [image], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], 15)
    prepared = prepare(model, "nhwc.onnx")
    assert image_input_shape(prepared, "nhwc.onnx") == (3, 8, 8) and "Transpose" not in [node.op_type for node in prepared.graph]
    x = _images(4, (8, 8, 3))
    np.testing.assert_allclose(_run(_bytes(restore_interface(prepared)), x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-6)
    path, out, data = tmp_path / "nhwc.onnx", tmp_path / "q.onnx", tmp_path / "d.npz"
    onnx.save(model, path)
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), labels=np.zeros(6, np.int64))
    result = _invoke("convert", path, "-o", out, "--eval-data", data, "--input-scale", "0.00392", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", *FAST)
    assert result.exit_code == 0, result.output
    emitted = onnx.load(out)
    assert [d.dim_param or d.dim_value for d in emitted.graph.input[0].type.tensor_type.shape.dim] == ["N", 8, 8, 3]
    assert np.corrcoef(_run(emitted, x)[0].ravel(), _run(model, x)[0].ravel())[0, 1] > 0.9


def test_a_batch_size_built_into_a_reshape_of_the_whole_batch_is_bad_input():
    """Flatten from axis 0 folds the batch into one dimension, which the Reshape splits again."""
    nodes, x = _stem(batch=2)
    target = numpy_helper.from_array(np.array([2, 4], np.int64), "target")
    nodes += [helper.make_node("Flatten", ["p"], ["f"], axis=0), helper.make_node("Reshape", ["f", "target"], ["y"])]
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], 17, initializers=[*_initializers(), target])
    with pytest.raises(BadInputError, match=r"m\.onnx: the batch size 2 is built into the graph, .* \(at 3: .*dynamic batch axis"):
        prepare(model, "m.onnx")


def _two_heads(shapes: tuple[list, list]) -> onnx.ModelProto:
    nodes, x = _stem()
    nodes += [helper.make_node("Flatten", ["p"], ["logits"]), helper.make_node("Relu", ["p" if len(shapes[1]) == 4 else "logits"], ["other"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in zip(("logits", "other"), shapes)]
    return _model(nodes, [x], outputs, 17)


def test_several_outputs_need_output_name_unless_one_is_a_classifier(tmp_path):
    ambiguous, out = tmp_path / "two.onnx", tmp_path / "q.onnx"
    onnx.save(_two_heads((["N", 4], ["N", 4])), ambiguous)
    _one_line_exit_2(_invoke("convert", ambiguous, "-o", out, *FAST), "two.onnx", "2 outputs (logits, other)", "--output-name")
    _one_line_exit_2(_invoke("convert", ambiguous, "-o", out, "--output-name", "nope", *FAST), "--output-name 'nope'", "logits, other")
    result = _invoke("convert", ambiguous, "-o", out, "--output-name", "other", *FAST)
    assert result.exit_code == 0, result.output
    assert [value.name for value in onnx.load(out).graph.output] == ["other"]
    chosen = prepare(_two_heads((["N", 4], ["N", 4, 1, 1])), "m.onnx")
    assert [value.name for value in chosen.graph.outputs] == ["logits"]


def test_symbolic_image_dimensions_take_input_shape_and_keep_them(tmp_path):
    path, out = tmp_path / "any_size.onnx", tmp_path / "q.onnx"
    onnx.save(_plain(17, image=(3, "H", "W")), path)
    _one_line_exit_2(_invoke("convert", path, "-o", out, *FAST), "any_size.onnx", "--input-shape")
    _one_line_exit_2(_invoke("convert", path, "-o", out, "--input-shape", "4,8,8", *FAST), "contradicts")
    _one_line_exit_2(_invoke("convert", path, "-o", out, "--input-shape", "3x8x8", *FAST), "C,H,W")
    result = _invoke("convert", path, "-o", out, "--input-shape", "3,8,8", *FAST)
    assert result.exit_code == 0, result.output
    emitted = onnx.load(out)
    assert [d.dim_param or d.dim_value for d in emitted.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    assert _run(emitted, _images(2, (3, 12, 10)))[0].shape == (2, 4)


def test_foreign_file_options_with_a_zoo_model_are_bad_input(tmp_path):
    _one_line_exit_2(_invoke("convert", "digits-cnn", "-o", tmp_path / "q.onnx", "--output-name", "logits"), "apply to .onnx files")
    assert ForeignOptions.from_flags(None, "3,32,32") == ForeignOptions(None, (3, 32, 32))


def test_folded_batchnorm_message_says_how_to_keep_it(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    path = tmp_path / "folded.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    onnx.save(_model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], 17, initializers=_initializers()[:1]), path)
    _one_line_exit_2(_invoke("convert", path, "-o", tmp_path / "q.onnx", *FAST), "folded.onnx", "do_constant_folding=False", "TrainingMode.PRESERVE",
                     "optimize=False", "zsq-onnx export", "--calibration-data")
