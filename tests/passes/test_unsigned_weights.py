"""UnsignedWeightsPass (and the saturation rule of ort_kernels)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.passes.unsigned_weights import UnsignedWeightsPass

# uint8 activations at full range and int8 weights at +-127 in a Conv that ORT fuses into
# QLinearConv (per-tensor QDQ on input and output): u8 x s8 pair sums reach 2 x 255 x 127.
FUSED_CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 8, 4, 4] x) => (float[N, 4, 4, 4] y)
<int8[4, 8, 1, 1] wq = {{{weights}}}, float[4] ws = {{0.01, 0.02, 0.01, 0.02}}, int8[4] wz = {{0, 0, 0, 0}},
 float s = {{0.02}}, uint8 z = {{0}}, float os = {{0.1}}, uint8 oz = {{0}}>
{{
  q = QuantizeLinear (x, s, z)
  d = DequantizeLinear (q, s, z)
  w = DequantizeLinear <axis = 0> (wq, ws, wz)
  c = Conv (d, w)
  r = Relu (c)
  oq = QuantizeLinear (r, os, oz)
  y = DequantizeLinear (oq, os, oz)
}}
"""


def _model(weights: np.ndarray) -> onnx.ModelProto:
    return parse_model(FUSED_CONV.format(weights=", ".join(str(int(v)) for v in weights.ravel())))


def _levels(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    basic, full = (make_session(model, level=level).run(None, {"x": x})[0]
                   for level in (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))
    return basic, full


def test_full_range_weights_become_uint8_and_fused_output_equals_qdq():
    weights = np.where(np.arange(32).reshape(4, 8, 1, 1) % 3 == 0, -127, 127).astype(np.int8)
    model = _model(weights)
    shifted = apply_to_proto(model, UnsignedWeightsPass())
    onnx.checker.check_model(shifted, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in shifted.graph.initializer}
    dequantize = next(n for n in shifted.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[0] != "q")
    stored, zero_point = inits[dequantize.input[0]], inits[dequantize.input[2]]
    assert stored.dtype == np.uint8 and zero_point.dtype == np.uint8 and (zero_point == 128).all()
    np.testing.assert_array_equal(stored.astype(np.int16) - 128, weights)
    x = np.abs(np.random.default_rng(0).standard_normal((2, 8, 4, 4))).astype(np.float32) * 5
    reference, _ = _levels(model, x)
    basic, full = _levels(shifted, x)
    np.testing.assert_array_equal(basic, reference)
    np.testing.assert_allclose(full, reference, atol=0.1 + 1e-6)  # within one output LSB at ORT's highest level


def test_weights_within_seven_bits_stay_int8():
    unchanged = apply_to_proto(_model(np.full((4, 8, 1, 1), 63, np.int8)), UnsignedWeightsPass())
    assert {t.name: t.data_type for t in unchanged.graph.initializer}["wq"] == onnx.TensorProto.INT8


def test_weights_without_a_zero_point_get_one():
    weights = np.full((4, 8, 1, 1), 127, np.int8)
    model = _model(weights)
    dequantize = next(n for n in model.graph.node if n.input[0] == "wq")
    del dequantize.input[2]
    shifted = apply_to_proto(model, UnsignedWeightsPass())
    onnx.checker.check_model(shifted, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in shifted.graph.initializer}
    dequantize = next(n for n in shifted.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("wq"))
    assert (inits[dequantize.input[2]] == 128).all() and (inits[dequantize.input[0]] == 255).all()

