"""QuantizeBiasPass: int32 bias levels, and weight scales raised where a bias would overflow them."""

from __future__ import annotations

import numpy as np

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto, emit_proto, run, sample
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.passes.quantize_bias import QuantizeBiasPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.profiles import SIM
from zsq_onnx.recipe import QuantSpec

DEAD_CHANNEL = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<float[2, 2, 1, 1] w = {1., -0.5, 1e-12, -1e-12}, float[2] b = {0.1, 5.}>
{
  y = Conv (x, w, b)
}
"""


def test_dead_channel_keeps_its_bias():
    model = parse_model(DEAD_CHANNEL)
    spec = QuantSpec(8, False, "per_tensor")
    quantized = apply_to_proto(
        model,
        QuantizeActivationsPass({"x": spec}, {"x": (np.float32(-3), np.float32(3))}, ["weighted-op-input"]),
        QuantizeWeightsPass(_weight_specs(model)),
        QuantizeBiasPass(),
    )
    expected, got = run(model, sample()), run(emit_proto(quantized, SIM), sample())
    np.testing.assert_allclose(got[:, 1], expected[:, 1], atol=1e-4)
    np.testing.assert_allclose(got[:, 0], expected[:, 0], atol=0.05)


def _weight_specs(model) -> dict[str, QuantSpec]:
    return {node.name: QuantSpec(8, True, "per_channel") for node in model.graph.node if node.op_type == "Conv"}


SHARED_BIAS = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<float[2, 2, 1, 1] w1 = {1., -0.5, 0.25, 2.}, float[2, 2, 1, 1] w2 = {0.5, 1., -1., 0.75}, float[2] b = {0., 0.}>
{
  a = Conv (x, w1, b)
  r = Relu (a)
  y = Conv (r, w2, b)
}
"""


def test_a_bias_shared_by_two_layers_gets_one_quantizer_each():
    model = parse_model(SHARED_BIAS)
    spec = QuantSpec(8, False, "per_tensor")
    ranges = {"x": (np.float32(-3), np.float32(3)), "r": (np.float32(0), np.float32(4))}
    quantized = apply_to_proto(
        model, QuantizeActivationsPass({"x": spec, "r": spec}, ranges, ["weighted-op-input"]), QuantizeWeightsPass(_weight_specs(model)), QuantizeBiasPass(),
    )
    emitted = emit_proto(quantized, SIM)
    np.testing.assert_allclose(run(emitted, sample()), run(model, sample()), atol=0.1)
