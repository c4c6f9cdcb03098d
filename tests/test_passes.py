"""Each graph pass on small graphs written in ONNX text."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from tests.conftest import parse_model
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from zsq_onnx.passes.fold_constants import FoldConstantsPass
from zsq_onnx.passes.insert_quantizers import InsertQuantizersPass
from zsq_onnx.passes.quant_targets import activation_names, find_targets
from zsq_onnx.recipe import QuantSpec
from zsq_onnx.validate import make_session

CONV_BN = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2] y)
<float[3, 2, 1, 1] w = {1., -2., 0.5, 0.25, 3., -1.}, float[3] gamma = {1., 2., 0.5}, float[3] beta = {0.1, 0., -0.2},
 float[3] mean = {0.5, -1., 2.}, float[3] var = {1., 4., 0.25}, float[2, 3] fc = {1., 0., 0.5, -1., 2., 0.25}, float[2] fcb = {0., 1.}>
{
  c = Conv <pads = [0, 0, 0, 0]> (x, w)
  b = BatchNormalization <epsilon = 0.00001> (c, gamma, beta, mean, var)
  r = Relu (b)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  z = Gemm <transB = 1> (f, fc, fcb)
  y = Relu (z)
}
"""


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model).run(None, {"x": x})[0]


def test_fold_constants_evaluates_shape_arithmetic():
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
    folded = apply_passes(model, FoldConstantsPass())
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]
    shape = next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[1])
    assert onnx.numpy_helper.to_array(shape).tolist() == [0, 2, 3]


def test_fold_batchnorm_removes_bn_and_keeps_outputs():
    model = parse_model(CONV_BN)
    folded = apply_passes(model, FoldBatchNormPass())
    assert "BatchNormalization" not in [n.op_type for n in folded.graph.node]
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, x), _run(model, x), atol=1e-5)


def test_targets_and_activation_names():
    model = ir.serde.deserialize_model(parse_model(CONV_BN))
    targets = find_targets(model.graph)
    assert [(t.op_type, t.weight, t.weight_axis) for t in targets] == [("Conv", "w", 0), ("Gemm", "fc", 0)]
    assert activation_names(model.graph) == ["x", "f"]


def test_insert_quantizers_per_channel_weights_and_per_tensor_activations():
    model = apply_passes(parse_model(CONV_BN), FoldBatchNormPass())
    ranges = {"x": (np.array(-3.0), np.array(3.0)), "f": (np.array(0.0), np.array(5.0))}
    quantized = apply_passes(model, InsertQuantizersPass(QuantSpec(8, True, "per_channel"), QuantSpec(8, False), ranges))
    onnx.checker.check_model(quantized, full_check=True)
    zsq_nodes = [n for n in quantized.graph.node if n.domain == "zsq"]
    assert len(zsq_nodes) == 4
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    assert inits["w.zsq_scale"].shape == (3,)
    assert inits["x.zsq_scale"].shape == ()
    assert inits["x.zsq_zero_point"].dtype == np.uint8
    conv = next(n for n in quantized.graph.node if n.op_type == "Conv")
    assert conv.input[0] == "x.zsq_out" and conv.input[1] == "w.zsq_out"
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(quantized, x), _run(model, x), atol=0.1)
