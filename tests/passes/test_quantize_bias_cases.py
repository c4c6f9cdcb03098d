"""QuantizeBiasPass: which biases get int32 levels, their scales and names (on onnx_ir models)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import sample
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.passes.quantize_bias import BIAS_LEVELS, QuantizeBiasPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.quantizers.spec import QuantSpec

CONV_GEMM = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2] y)
<float[3, 2, 1, 1] w = {1., -2., 0.5, 0.25, 3., -1.}, float[3] b = {0.1, -0.37, 2.},
 float[2, 3] fc = {1., 0., 0.5, -1., 2., 0.25}, float[2] fcb = {0.3, -1.}>
{
  [conv] c = Conv (x, w, b)
  r = Relu (c)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  [fc] y = Gemm <transB = 1> (f, fc, fcb)
}
"""

RANGES = {"x": (np.float32(-3), np.float32(3)), "f": (np.float32(0), np.float32(2))}
ACTIVATION = QuantSpec(8, False)


def _quantize(
    text: str, weights: dict[str, QuantSpec], activations: dict[str, QuantSpec] | None = None, ranges: dict | None = None,
) -> ir.Model:
    """``text`` with activation quantizers (by default 8-bit on x and f), weight quantizers and bias quantizers."""
    activations = {"x": ACTIVATION, "f": ACTIVATION} if activations is None else activations
    passes = (QuantizeActivationsPass(activations, ranges or RANGES, ["weighted-op-input"]), QuantizeWeightsPass(weights), QuantizeBiasPass())
    return ir.passes.Sequential(*passes)(ir.serde.deserialize_model(parse_model(text))).model


def _outputs(model: ir.Model, *values: ir.Value) -> list[np.ndarray]:
    """``values`` of ``model`` computed by ORT on the sample input."""
    model.graph.outputs.extend(values)
    session = make_session(ir.serde.serialize_model(model), level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return session.run([value.name for value in values], {"x": sample()})


def _bias_levels(bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """BiasQuantize in numpy: bias rounded to int32 levels of input_scale * weight_scale."""
    scale = np.float32(input_scale) * weight_scale.astype(np.float32)
    return (np.rint(bias / scale).astype(np.int32) * scale).astype(np.float32)


def _node(model: ir.Model, name: str) -> ir.Node:
    return next(node for node in model.graph if node.name == name)


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_conv_and_gemm_biases_take_input_times_weight_scales(granularity):
    spec = QuantSpec(8, True, granularity)
    model = _quantize(CONV_GEMM, {"conv": spec, "fc": spec})
    conv, gemm = _node(model, "conv"), _node(model, "fc")
    for layer, bias, length in ((conv, "b", 3), (gemm, "fcb", 2)):
        quantizer = layer.inputs[2].producer()
        assert (quantizer.domain, quantizer.op_type, quantizer.name, layer.inputs[2].name) == ("zsq", "BiasQuantize", f"zsq/{bias}", f"{bias}.zsq_out")
        input_scale, weight_scale = quantizer.inputs[1:]
        assert input_scale is layer.inputs[0].producer().inputs[1] and weight_scale is layer.inputs[1].producer().inputs[1]
        assert weight_scale.const_value.size == (length if granularity == "per_channel" else 1)
    got = _outputs(model, conv.inputs[2], gemm.inputs[2])
    for value, layer in zip(got, (conv, gemm)):
        bias, input_scale, weight_scale = (v.const_value.numpy() for v in layer.inputs[2].producer().inputs)
        np.testing.assert_array_equal(value, _bias_levels(bias, input_scale, weight_scale))


SHARED_BIAS = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<float[2, 2, 1, 1] w1 = {1., -0.5, 0.25, 2.}, float[2, 2, 1, 1] w2 = {0.5, 1., -1., 0.75}, float[2] b = {0.3, -0.2}>
{
  [conv1] a = Conv (x, w1, b)
  r = Relu (a)
  CONV2 y = Conv (r, w2, b)
}
"""


@pytest.mark.parametrize(("name", "suffix"), [("[conv2]", "conv2"), ("", "y")])  # a node without a name: its output's
def test_a_shared_bias_gets_a_quantizer_named_after_each_layer(name, suffix):
    spec = QuantSpec(8, True, "per_channel")
    ranges = {"x": RANGES["x"], "r": (np.float32(0), np.float32(4))}
    model = _quantize(SHARED_BIAS.replace("CONV2", name), {"conv1": spec, "conv2": spec, "": spec}, {"x": ACTIVATION, "r": ACTIVATION}, ranges)
    first, second = (node for node in model.graph if node.op_type == "Conv")
    assert (first.inputs[2].name, second.inputs[2].name) == ("b.conv1.zsq_out", f"b.{suffix}.zsq_out")
    assert first.inputs[2].producer().name == "zsq/b.conv1" and first.inputs[2].producer().inputs[0] is second.inputs[2].producer().inputs[0]
    biases = _outputs(model, first.inputs[2], second.inputs[2])
    for value, layer in zip(biases, (first, second)):
        np.testing.assert_array_equal(value, _bias_levels(*(v.const_value.numpy() for v in layer.inputs[2].producer().inputs)))
    assert not np.array_equal(*biases)  # each at its own layer's scales


@pytest.mark.parametrize(
    ("weights", "activations"),
    [
        ({"fc": QuantSpec()}, None),  # the conv's weight is not quantized
        ({"conv": QuantSpec(), "fc": QuantSpec()}, {"f": ACTIVATION}),  # nor the conv's input
        ({"conv": QuantSpec(), "fc": QuantSpec()}, {"x": QuantSpec(8, False, "per_channel"), "f": ACTIVATION}),  # its input scale is per channel
    ],
)
def test_conv_bias_stays_float_unless_input_and_weight_are_quantized_per_tensor(weights, activations):
    ranges = {"x": (np.full(2, -3, np.float32), np.full(2, 3, np.float32)), "f": RANGES["f"]}
    model = _quantize(CONV_GEMM, weights, activations, ranges if activations and "x" in activations else None)
    assert _node(model, "conv").inputs[2].name == "b"
    assert [node.inputs[0].name for node in model.graph if node.op_type == "BiasQuantize"] == ["fcb"]


TINY_WEIGHT = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<float[2, 2, 1, 1] w = {1e-12, -1e-12, 2e-12, 0.}, float[2] b = {5., -0.5}>
{
  [conv] y = Conv (x, w, b)
}
"""


def test_per_tensor_weight_scale_is_raised_to_hold_the_largest_bias():
    model = _quantize(TINY_WEIGHT, {"conv": QuantSpec(8, True, "per_tensor")}, {"x": ACTIVATION})
    conv = _node(model, "conv")
    input_scale, weight_scale = (v.const_value.numpy() for v in conv.inputs[2].producer().inputs[1:])
    assert weight_scale == np.float32(5) / (np.float32(input_scale) * np.float32(BIAS_LEVELS))
    (bias,) = _outputs(model, conv.inputs[2])
    np.testing.assert_allclose(bias, [5.0, -0.5], rtol=1e-6)
