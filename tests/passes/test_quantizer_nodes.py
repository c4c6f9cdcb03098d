"""quantizer_nodes: the zsq quantizer nodes it builds run in ORT as their numpy definitions."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import run, sample
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions, new_initializer
from zsq_onnx.quantizers import registry
from zsq_onnx.quantizers.common import DOMAIN, VERSION
from zsq_onnx.quantizers.spec import QuantSpec

IDENTITY = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
{
  y = Identity (x)
}
"""


def _quantize_input(build) -> ir.Model:
    """The Identity model with the quantizer ``build(graph, x)`` inserted in front of it."""
    model = ir.serde.deserialize_model(parse_model(IDENTITY))
    ensure_quantizer_functions(model)
    identity = model.graph.node(0)
    quantizer = build(model.graph, model.graph.inputs[0])
    model.graph.insert_before(identity, quantizer)
    identity.replace_input_with(0, quantizer.outputs[0])
    return model


def _fake_quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """QuantizeLinear -> clip to [qmin, qmax] -> DequantizeLinear in numpy (scale, zero point per channel on axis 1)."""
    scale = np.asarray(scale, np.float32).reshape(1, -1, 1, 1)
    zero_point = np.asarray(zero_point, np.float32).reshape(1, -1, 1, 1)
    levels = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return ((levels - zero_point) * scale).astype(np.float32)


def _initializers(model: ir.Model) -> dict[str, np.ndarray]:
    return {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}


@pytest.mark.parametrize(
    ("spec", "use_4bit_types", "op_type", "dtype"),
    [
        (QuantSpec(8, True), True, "StaticQuantize", ir.DataType.INT8),
        (QuantSpec(8, False, "per_channel"), True, "StaticQuantize", ir.DataType.UINT8),
        (QuantSpec(4, True), True, "StaticQuantize", ir.DataType.INT4),
        (QuantSpec(4, False), False, "StaticQuantizeClip", ir.DataType.UINT8),
        (QuantSpec(3, True, "per_channel"), True, "StaticQuantizeClip", ir.DataType.INT8),
    ],
)
def test_static_quantizer_runs_as_its_definition(spec, use_4bit_types, op_type, dtype):
    scale = np.array([0.3, 0.05] if spec.granularity == "per_channel" else 0.3, np.float32)
    zero_point = np.full(scale.shape, 0 if spec.signed else 3, np.int64)
    model = _quantize_input(lambda graph, x: add_static_quantizer(graph, x, scale, zero_point, spec, 1, use_4bit_types))
    node = model.graph.node(0)
    assert (node.domain, node.op_type, node.name, node.outputs[0].name) == (DOMAIN, op_type, "zsq/x.zsq", "x.zsq_out")
    inits = _initializers(model)
    assert inits["x.zsq_scale"].dtype == np.float32 and inits["x.zsq_scale"].shape == scale.shape
    assert model.graph.initializers["x.zsq_zero_point"].const_value.dtype == dtype
    if op_type == "StaticQuantizeClip":
        assert (int(inits["x.zsq_qmin"]), int(inits["x.zsq_qmax"])) == (spec.qmin, spec.qmax)
    else:
        assert "x.zsq_qmin" not in inits
    x = sample() * 4
    expected = _fake_quantize(x, scale, zero_point, spec.qmin, spec.qmax)
    np.testing.assert_allclose(run(ir.serde.serialize_model(model), x), expected, rtol=1e-6, atol=1e-7)


def test_static_quantizer_prefix_names_its_values():
    spec = QuantSpec(8, True)
    model = _quantize_input(lambda graph, x: add_static_quantizer(graph, x, np.array(0.1, np.float32), np.array(0), spec, 1, prefix="act"))
    assert model.graph.node(0).outputs[0].name == "act_out"
    assert {"act_scale", "act_zero_point"} <= set(model.graph.initializers)


def _granular(x: np.ndarray, bits: int) -> np.ndarray:
    """GranQ in numpy: per sample and channel, range widened to 0, asymmetric over 2^bits - 1 levels."""
    levels = np.float32((1 << bits) - 1)
    rows = x.reshape(x.shape[0] * x.shape[1], -1)
    low = np.minimum(rows.min(axis=1, keepdims=True), 0)
    high = np.maximum(rows.max(axis=1, keepdims=True), 0)
    step = (np.maximum(high - low, np.float32(1e-8)) / levels).astype(np.float32)
    zero_point = np.rint(-low / step)
    q = np.clip(np.rint(rows / step) + zero_point, 0, levels)
    return ((q - zero_point) * step).astype(np.float32).reshape(x.shape)


def test_granular_quantizer_runs_as_granq():
    spec = QuantSpec(4, False, "granular")
    model = _quantize_input(lambda graph, x: add_granular_quantizer(graph, x, spec))
    node = model.graph.node(0)
    assert (node.op_type, node.outputs[0].name) == ("GranularQuantize", "x.zsq_out")
    assert _initializers(model) == {"x.zsq_levels": np.float32(15)}
    x = sample()
    x[0, 1] = np.abs(x[0, 1])  # an all-positive channel: its range still starts at 0
    got = run(ir.serde.serialize_model(model), x)
    np.testing.assert_allclose(got, _granular(x, 4), rtol=1e-6, atol=1e-7)
    assert len(np.unique(got[1, 0])) <= 16


def test_quantizer_functions_are_added_once():
    model = ir.serde.deserialize_model(parse_model(IDENTITY))
    ensure_quantizer_functions(model)
    ensure_quantizer_functions(model)
    assert model.opset_imports[DOMAIN] == VERSION
    assert sorted(name for _, name, _ in model.functions) == sorted(registry.function_protos())
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def test_new_initializer_casts_to_the_given_type():
    model = ir.serde.deserialize_model(parse_model(IDENTITY))
    value = new_initializer(model.graph, "z", np.array([3, -1]), ir.DataType.INT8)
    assert model.graph.initializers["z"] is value and value.type == ir.TensorType(ir.DataType.INT8)
    np.testing.assert_array_equal(value.const_value.numpy(), np.array([3, -1], np.int8))
