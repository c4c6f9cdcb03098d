"""AdaptiveActivationsPass."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import run, sample
from zsq_onnx.passes.adaptive_activations import AdaptiveActivationsPass
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.quantizers.spec import QuantSpec

# x: a graph input, r: a computed rank-4 tensor of 8 channels (read by the pool), f: rank 2 (read by the Gemm).
CONV_POOL_GEMM = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2] y)
<float[8, 2, 1, 1] w = {1., -2., 0.5, 0.25, 3., -1., 2., 0., 1., 1., -1., 0.5, 2., -2., 0.25, 0.75},
 float[2, 8] fc = {1., 0., 0.5, -1., 2., 0.25, -0.5, 1., 0., 1., 1., -2., 0.5, 0.25, 1., -1.}>
{
  c = Conv (x, w)
  r = Relu (c)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm <transB = 1> (f, fc)
}
"""

RULES = ("weighted-op-input", "pool-input")


def _static(spec: QuantSpec, use_4bit_types: bool = True, scale: float = 1.0) -> ir.Model:
    """CONV_POOL_GEMM with static quantizers on x, r and f; ``scale`` widens r's range."""
    model = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(parse_model(CONV_POOL_GEMM)))
    high = np.full(8, 4 * scale, np.float32) if spec.granularity == "per_channel" else np.float32(4 * scale)
    ranges = {"x": (np.float32(-3), np.float32(3)), "r": (np.zeros_like(high), high), "f": (np.float32(0), np.float32(2))}
    specs = {"x": QuantSpec(8, spec.symmetric), "r": spec, "f": QuantSpec(8, spec.symmetric)}
    return ir.passes.Sequential(QuantizeActivationsPass(specs, ranges, RULES, use_4bit_types))(model).model


def _quantizers(model: ir.Model) -> dict[str, ir.Node]:
    """zsq nodes by the tensor they quantize."""
    return {node.inputs[0].name: node for node in model.graph if node.domain == "zsq"}


def _array(value: ir.Value) -> np.ndarray:
    return value.const_value.numpy()


@pytest.mark.parametrize(
    ("spec", "container", "levels"),
    [
        (QuantSpec(8, False), ir.DataType.UINT8, (0, 255)),
        (QuantSpec(4, False), ir.DataType.UINT8, (0, 15)),  # from a uint4 StaticQuantize
        (QuantSpec(3, True), ir.DataType.INT8, (-4, 3)),  # from an int8 StaticQuantizeClip
    ],
)
def test_computed_activation_gets_an_adapter_that_starts_as_the_static_quantizer(spec, container, levels):
    model = _static(spec)
    static = _quantizers(model)["r"]
    name, scale, static_zero_point = static.name, static.inputs[1], static.inputs[2]
    expected = run(ir.serde.serialize_model(model), sample())
    assert AdaptiveActivationsPass()(model).modified
    quantizers = _quantizers(model)
    assert {name: node.op_type for name, node in quantizers.items()} == {"x": "StaticQuantize", "r": "AdaptiveQuantize", "f": "StaticQuantize"}
    adaptive = quantizers["r"]
    assert adaptive.outputs[0].name == "r.zsq_adaptive_out" and adaptive.inputs[1] is scale
    zero_point, qmin, qmax, down_weight, down_bias, up_weight, up_bias = adaptive.inputs[2:]
    assert {v.const_value.dtype for v in (zero_point, qmin, qmax)} == {container}
    assert _array(zero_point) == _array(static_zero_point).astype(np.int64) and (int(_array(qmin)), int(_array(qmax))) == levels
    assert down_weight.shape == ir.Shape([2, 8]) and not _array(down_bias).any() and _array(down_bias).shape == (2,)
    assert not _array(up_weight).any() and _array(up_weight).shape == (1, 2) and _array(up_bias).tolist() == [1.0]
    assert name not in {node.name for node in model.graph} and static_zero_point.name not in model.graph.initializers
    assert [user for user, _ in adaptive.outputs[0].uses()] == [next(node for node in model.graph if node.op_type == "GlobalAveragePool")]
    np.testing.assert_array_equal(run(ir.serde.serialize_model(model), sample()), expected)


def test_adapter_scales_the_step_per_sample():
    model = _static(QuantSpec(8, False))
    AdaptiveActivationsPass()(model)
    _quantizers(model)["r"].inputs[8].const_value = ir.tensor(np.array([2.0], np.float32))  # beta = 2 for every sample
    np.testing.assert_array_equal(run(ir.serde.serialize_model(model), sample()), run(ir.serde.serialize_model(_static(QuantSpec(8, False), scale=2.0)), sample()))


def test_seed_draws_the_first_adapter_layer():
    weights = []
    for seed in (0, 0, 1):
        model = _static(QuantSpec(8, False))
        AdaptiveActivationsPass(seed)(model)
        weights.append(_array(_quantizers(model)["r"].inputs[5]))
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.array_equal(weights[0], weights[2])


def test_per_channel_quantizers_stay_static():
    model = _static(QuantSpec(8, False, "per_channel"))
    assert not AdaptiveActivationsPass()(model).modified
    assert {node.op_type for node in _quantizers(model).values()} == {"StaticQuantize"}
