"""FreeBatchPass."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto
from zsq_onnx.passes.free_batch import FreeBatchPass

FIXED = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[2, 3, 4, 4] x) => (float[2, 5] y)
<float[5, 3] w = {1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 1., 1., -1., 0., 2.}, int64[2] view = {2, 3}, int64[2] axes = {2, 3}>
{
  p = ReduceMean <keepdims = 1> (x, axes)
  f = Reshape <allowzero = 1> (p, view)
  y = Gemm <transB = 1> (f, w)
}
"""


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_fixed_batch_becomes_symbolic_and_the_reshape_copies_it():
    freed = apply_to_proto(parse_model(FIXED), FreeBatchPass("batch"))
    assert _dims(freed.graph.input[0]) == ["batch", 3, 4, 4]
    assert _dims(freed.graph.output[0]) == ["batch", 5]
    session = ort.InferenceSession(freed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(7, 3, 4, 4)).astype(np.float32)
    weight = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [-1, 0, 2]], np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x.mean(axis=(2, 3)) @ weight.T, rtol=1e-5)


def test_inputs_of_different_fixed_sizes_are_left_alone():
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[2, 3] a, float[3, 3] b) => (float[2, 3] y)
        {
          y = MatMul (a, b)
        }
        """
    )
    kept = apply_to_proto(model, FreeBatchPass("batch"))
    assert [_dims(v) for v in kept.graph.input] == [[2, 3], [3, 3]]
