"""FloatPathWeightsPass."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import run, sample
from zsq_onnx.passes.float_path_weights import FloatPathWeightsPass

# An emitted Conv: int8 weight and int32 bias levels; its input float, QDQ per tensor (d) or per channel (dc); its output QDQ.
EMITTED_CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<int8[2, 2, 1, 1] wq = {100, -50, 25, 127}, float[2] ws = {0.01, 0.02}, int8[2] wz = {0, 0}, int32[2] bq = {250, -1000}, float[2] bs = {0.0002, 0.0004},
 float s = {0.02}, uint8 z = {128}, float[2] sc = {0.02, 0.03}, uint8[2] zc = {128, 128}, float os = {0.05}, uint8 oz = {0}>
{
  q = QuantizeLinear (x, s, z)
  d = DequantizeLinear (q, s, z)
  qc = QuantizeLinear <axis = 1> (x, sc, zc)
  dc = DequantizeLinear <axis = 1> (qc, sc, zc)
  "conv.weight.zsq_out" = DequantizeLinear <axis = 0> (wq, ws, wz)
  "conv.bias.zsq_out" = DequantizeLinear <axis = 0> (bq, bs)
  c = Conv (INPUT, "conv.weight.zsq_out", "conv.bias.zsq_out")
  r = Relu (c)
  oq = QuantizeLinear (r, os, oz)
  y = DequantizeLinear (oq, os, oz)
}
"""


def _model(input_: str) -> ir.Model:
    return ir.serde.deserialize_model(parse_model(EMITTED_CONV.replace("INPUT", input_)))


@pytest.mark.parametrize("input_", ["x", "dc"])
def test_float_layer_stores_its_dequantized_weight_and_bias(input_):
    model = _model(input_)
    expected = run(ir.serde.serialize_model(model), sample())
    assert FloatPathWeightsPass()(model).modified
    conv = next(node for node in model.graph if node.op_type == "Conv")
    weight, bias = conv.inputs[1:]
    assert (weight.name, bias.name) == ("conv.weight.dequantized", "conv.bias.dequantized")
    assert weight.is_initializer() and bias.is_initializer() and weight.const_value.dtype == bias.const_value.dtype == ir.DataType.FLOAT
    levels = np.array([100, -50, 25, 127], np.float32).reshape(2, 2, 1, 1)
    np.testing.assert_array_equal(weight.const_value.numpy(), levels * np.array([0.01, 0.02], np.float32).reshape(2, 1, 1, 1))
    np.testing.assert_array_equal(bias.const_value.numpy(), np.array([250, -1000], np.float32) * np.array([0.0002, 0.0004], np.float32))
    assert not {"wq", "ws", "wz", "bq", "bs"} & set(model.graph.initializers)
    assert sum(node.op_type == "DequantizeLinear" for node in model.graph) == (2 if input_ == "dc" else 1)
    np.testing.assert_array_equal(run(ir.serde.serialize_model(model), sample()), expected)


def test_integer_kernel_keeps_its_integer_weights():
    model = _model("d")
    assert not FloatPathWeightsPass()(model).modified
    assert {"wq", "bq"} <= set(model.graph.initializers)
