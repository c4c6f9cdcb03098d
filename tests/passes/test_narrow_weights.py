"""NarrowWeightContainersPass: weights whose levels fit 4 bits are stored as int4/uint4."""

from __future__ import annotations

import numpy as np
import onnx

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto, run, sample
from zsq_onnx.passes.narrow_weights import NarrowWeightContainersPass

DEQUANTIZED_CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<int8[2, 2, 1, 1] w3 = {3, -4, 1, 0}, float[2] s3 = {0.5, 0.25}, int8[2] z3 = {0, 0},
 uint8[2, 2, 1, 1] w8 = {200, 3, 17, 128}, float s8 = {0.01}, uint8 z8 = {128}>
{
  a = DequantizeLinear <axis = 0> (w3, s3, z3)
  b = DequantizeLinear (w8, s8, z8)
  c = Conv (x, a)
  y = Conv (c, b)
}
"""


def test_3bit_levels_move_to_int4_and_8bit_levels_stay():
    model = parse_model(DEQUANTIZED_CONV)
    narrowed = apply_to_proto(model, NarrowWeightContainersPass())
    types = {t.name: t.data_type for t in narrowed.graph.initializer}
    assert types["w3"] == types["z3"] == onnx.TensorProto.INT4
    assert types["w8"] == types["z8"] == onnx.TensorProto.UINT8
    np.testing.assert_array_equal(run(narrowed, sample()), run(model, sample()))
    assert len(next(t for t in narrowed.graph.initializer if t.name == "w3").raw_data) == 2, "four levels in two bytes"
