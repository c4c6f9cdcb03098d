"""FoldConstantsPass."""

from __future__ import annotations

import onnx

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto
from zsq_onnx.passes.fold_constants import KEPT_OPS, FoldConstantsPass


def test_folds_shape_arithmetic():
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 6] x) => (float[N, 2, 3] y)
        <int64[2] a = {2, 3}, int64[1] zero = {0}>
        {
          s = Concat <axis = 0> (zero, a)
          y = Reshape (x, s)
        }
        """
    )
    folded = apply_to_proto(model, FoldConstantsPass())
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]
    shape = next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[1])
    assert onnx.numpy_helper.to_array(shape).tolist() == [0, 2, 3]


def test_keeps_quantize_unless_asked_and_folds_weights_to_integers():
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 2] x) => (float[N, 2] y)
        <float[2, 2] w = {1., -2., 0.5, 0.25}, float s = {0.02}, int8 zp = {0}>
        {
          q = QuantizeLinear (w, s, zp)
          d = DequantizeLinear (q, s, zp)
          y = MatMul (x, d)
        }
        """
    )
    assert [n.op_type for n in apply_to_proto(model, FoldConstantsPass()).graph.node] == ["QuantizeLinear", "DequantizeLinear", "MatMul"]
    folded = apply_to_proto(model, FoldConstantsPass(kept_ops=KEPT_OPS - {"QuantizeLinear"}))
    assert [n.op_type for n in folded.graph.node] == ["DequantizeLinear", "MatMul"]
    weights = next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[0])
    assert weights.data_type == onnx.TensorProto.INT8
    assert onnx.numpy_helper.to_array(weights).tolist() == [[50, -100], [25, 12]]
