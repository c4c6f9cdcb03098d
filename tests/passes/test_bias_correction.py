"""BiasCorrectionPass: known shifts from constructed weight errors, and mean outputs on random data."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto, run
from zsq_onnx.passes.bias_correction import BiasCorrectionPass, conv_response
from zsq_onnx.passes.quantize_bias import QuantizeBiasPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.plan.calibrate import input_means
from zsq_onnx.recipe import QuantSpec

INT8 = QuantSpec(8, True, "per_channel")

# Per output channel max |w| = 1, so the int8 scale is 1/127: 10.25/127 rounds to 10/127 and
# -3.75/127 to -4/127 (errors -0.25/127 each); all other weights are exact.
CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 3, 3] x) => (float[N, 2, 3, 3] y)
<float[2, 2, 1, 2] w = {1., 0., 0.0807086614, 0., 0., -0.0295275591, 1., 0.}, float[2] b = {0.5, -1.}>
{ y = Conv <pads = [0, 0, 0, 1]> (x, w, b) }
"""

DEPTHWISE_NO_BIAS = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 3, 3] x) => (float[N, 4, 3, 3] y)
<float[4, 1, 1, 1] w = {1., 1., 1., 1.}>
{ y = Conv <group = 2> (x, w) }
"""

GEMM = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 3] x) => (float[N, 2] y)
<float[2, 3] w = {1., 0.0807086614, 0., -0.0295275591, 0., 1.}, float[2] c = {0.25, 0.}>
{ y = Gemm <transB = 1, alpha = 2., beta = 0.5> (x, w, c) }
"""


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
    return model


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_conv_bias_moves_by_the_weight_error_times_the_input_mean():
    model = _named(parse_model(CONV))
    means = np.array([2.0, -3.0], np.float32)
    correction = BiasCorrectionPass({"n0": means})
    corrected = apply_to_proto(model, QuantizeWeightsPass({"n0": INT8}), correction)
    # channel 0: error -0.25/127 on input 1, tap 0; channel 1: on input 0, tap 1
    expected = np.array([0.5 - (-0.25 / 127) * -3.0, -1.0 - (-0.25 / 127) * 2.0], np.float32)
    np.testing.assert_allclose(_initializers(corrected)["b"], expected, rtol=1e-5)
    assert correction.shifts == pytest.approx({"n0": 0.75 / 127}, rel=1e-4)
    onnx.checker.check_model(corrected, full_check=True)


def test_grouped_conv_pairs_outputs_with_their_group_and_gets_a_bias():
    weight = np.arange(4, dtype=np.float64).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(conv_response(weight, np.array([10.0, 100.0]), group=2), [0.0, 10.0, 200.0, 300.0])
    with pytest.raises(ValueError, match="input means"):
        conv_response(weight, np.ones(3), group=2)
    model = _named(parse_model(DEPTHWISE_NO_BIAS))
    corrected = apply_to_proto(model, QuantizeWeightsPass({"n0": QuantSpec(8, True, "per_tensor")}), BiasCorrectionPass({"n0": np.ones(2, np.float32)}))
    conv = next(n for n in corrected.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3 and conv.input[2] == "w.bias"
    np.testing.assert_array_equal(_initializers(corrected)["w.bias"], np.zeros(4, np.float32))  # 1.0 is exact


def test_gemm_correction_scales_with_alpha_and_beta():
    model = _named(parse_model(GEMM))
    means = np.array([3.0, -1.0, 5.0], np.float32)
    corrected = apply_to_proto(model, QuantizeWeightsPass({"n0": INT8}), BiasCorrectionPass({"n0": means}))
    shift = 2.0 * np.array([(-0.25 / 127) * -1.0, (-0.25 / 127) * 3.0]) / 0.5
    np.testing.assert_allclose(_initializers(corrected)["c"], np.array([0.25, 0.0]) - shift, rtol=1e-5)


def test_nodes_without_means_or_a_quantized_weight_are_left_alone():
    model = _named(parse_model(CONV))
    unchanged = apply_to_proto(model, BiasCorrectionPass({"n0": np.ones(2, np.float32)}))
    np.testing.assert_array_equal(_initializers(unchanged)["b"], [0.5, -1.0])
    quantized = apply_to_proto(model, QuantizeWeightsPass({"n0": INT8}), BiasCorrectionPass({}))
    np.testing.assert_array_equal(_initializers(quantized)["b"], [0.5, -1.0])


RANDOM_CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 8, 11, 11] x) => (float[N, 6, H, W] y)
<float[6, 8, 3, 3] w = {WEIGHTS}, float[6] b = {0., 0., 0., 0., 0., 0.}>
{ y = Conv <ATTRIBUTES> (x, w, b) }
"""


@pytest.mark.parametrize("attributes", [
    "pads = [0, 0, 0, 0]", "pads = [1, 1, 1, 1]", "pads = [2, 0, 1, 3], strides = [2, 3]", "pads = [2, 2, 2, 2], dilations = [2, 1]",
    'auto_pad = "SAME_UPPER", strides = [2, 2]', 'auto_pad = "SAME_LOWER", strides = [2, 2]',
])
def test_corrected_4bit_conv_mean_output_matches_fp32(attributes):
    weights = np.random.default_rng(0).standard_normal(6 * 8 * 9).astype(np.float32)
    text = RANDOM_CONV.replace("WEIGHTS", ", ".join(f"{v:.6f}" for v in weights)).replace("ATTRIBUTES", attributes)
    model = _named(parse_model(text))
    data = lambda seed: (np.random.default_rng(seed).standard_normal((16, 8, 11, 11)) + np.linspace(-2, 3, 8)[:, None, None]).astype(np.float32)  # noqa: E731
    batches = [data(1), data(2)]
    means = input_means(ir.serde.deserialize_model(model), {"n0"}, batches)
    assert means["n0"].shape == (8, 11, 11)
    spec = QuantSpec(4, True, "per_channel")
    plain = apply_to_proto(model, QuantizeWeightsPass({"n0": spec}))
    corrected = apply_to_proto(model, QuantizeWeightsPass({"n0": spec}), BiasCorrectionPass(means))
    inputs = np.concatenate(batches)
    reference = run(model, inputs).mean(axis=(0, 2, 3))
    before = np.abs(run(plain, inputs).mean(axis=(0, 2, 3)) - reference).max()
    after = np.abs(run(corrected, inputs).mean(axis=(0, 2, 3)) - reference).max()
    assert after < 1e-4 < 0.1 < before  # exact on the data it measured, borders included
    channel_means = {"n0": means["n0"].mean(axis=(1, 2))}  # the per-channel approximation
    approximate = apply_to_proto(model, QuantizeWeightsPass({"n0": spec}), BiasCorrectionPass(channel_means), QuantizeBiasPass())
    assert np.abs(run(approximate, data(3)).mean(axis=(0, 2, 3)) - run(model, data(3)).mean(axis=(0, 2, 3))).max() < before / 2


CHAIN = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y)
<float[4, 4, 1, 1] w1 = {W1}, float[4] b1 = {0.1, -0.2, 0.3, 0.}, float[4, 4, 1, 1] w2 = {W2}, float[4] b2 = {0., 0., 0., 0.}>
{
  a = Conv (x, w1, b1)
  r = Relu (a)
  y = Conv (r, w2, b2)
}
"""


def test_empirical_correction_matches_the_float_output_mean_and_keeps_the_output_layer():
    """Each layer is corrected for its own weights' error on the float graph's input means: the
    first layer's mean output then equals the float one; the output layer keeps its bias."""
    from zsq_onnx.plan.empirical_bias import EmpiricalBiasCorrectionPass

    rng = np.random.default_rng(1)
    text = CHAIN.replace("W1", ", ".join(f"{v:.5f}" for v in rng.standard_normal(16))).replace("W2", ", ".join(f"{v:.5f}" for v in rng.standard_normal(16)))
    model = _named(parse_model(text))
    batches = [(rng.standard_normal((8, 4, 6, 6)) + 0.5).astype(np.float32) for _ in range(2)]
    spec = QuantSpec(3, True, "per_channel")
    quantized = apply_to_proto(model, QuantizeWeightsPass({"n0": spec, "n2": spec}))
    correction = EmpiricalBiasCorrectionPass(ir.serde.deserialize_model(model), {"n0", "n2"}, batches)
    corrected = apply_to_proto(quantized, correction)
    assert set(correction.shifts) == {"n0"}
    np.testing.assert_array_equal(_initializers(corrected)["b2"], _initializers(model)["b2"])
    inputs = np.concatenate(batches)
    reference, before, after = (run(_first_layer_output(m), inputs).mean(axis=(0, 2, 3)) for m in (model, quantized, corrected))
    assert np.abs(after - reference).max() < 1e-4 < np.abs(before - reference).max()


def _first_layer_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the first Conv's output ``a`` as its first graph output."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.graph.output.insert(0, onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, None))
    return result


def test_output_layers_are_those_that_reach_a_graph_output_through_no_other_weighted_layer():
    from zsq_onnx.plan.empirical_bias import output_layers

    graph = ir.serde.deserialize_model(_named(parse_model(CHAIN.replace("W1", ", ".join(["0.5"] * 16)).replace("W2", ", ".join(["0.5"] * 16))))).graph
    assert output_layers(graph, {"n0", "n2"}) == {"n2"}
    assert output_layers(graph, {"n0"}) == set()
    assert output_layers(graph, {"n2"}) == {"n2"}
