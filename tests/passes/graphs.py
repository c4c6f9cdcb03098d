"""Small graphs in ONNX text shared by the pass tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from zsq_onnx.executors.runtime import make_session
from zsq_onnx.passes import apply_passes
from zsq_onnx.profiles import Profile, emit

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

RESIDUAL = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<float[2, 2, 1, 1] w1 = {1., -1., 0.5, 2.}, float[2, 2, 1, 1] w2 = {0.5, 0.25, -1., 1.}, float[1] bias = {0.1}>
{
  a = Conv (x, w1)
  r = Relu (a)
  c = Conv (r, w2)
  s = Add (c, x)
  t = Add (s, bias)
  y = Relu (t)
}
"""


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """First output of ``model`` on input ``x`` in ORT CPU, as written (no graph fusions)."""
    return make_session(model, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"x": x})[0]


def sample(shape: tuple[int, ...] = (2, 2, 4, 4)) -> np.ndarray:
    """A fixed random input."""
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def apply_to_proto(model: onnx.ModelProto, *passes: ir.passes.PassBase) -> onnx.ModelProto:
    """``passes`` run on ``model`` through the IR, as a ModelProto again for proto-level asserts."""
    return ir.serde.serialize_model(apply_passes(ir.serde.deserialize_model(model), *passes))


def emit_proto(model: onnx.ModelProto, profile: Profile) -> onnx.ModelProto:
    """``model`` recorded as planned for ``profile`` and emitted for it, as a ModelProto."""
    planned = ir.serde.deserialize_model(model)
    profile.record(planned)
    return ir.serde.serialize_model(emit(planned))
