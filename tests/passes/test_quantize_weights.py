"""QuantizeWeightsPass."""

from __future__ import annotations

import numpy as np
import onnx

from tests.conftest import parse_model
from tests.passes.graphs import CONV_BN, apply_to_proto, run, sample
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.recipe import QuantSpec


def test_per_channel_int8_weights():
    model = parse_model(CONV_BN)
    for node, name in zip((n for n in model.graph.node if n.op_type in ("Conv", "Gemm")), ("conv", "gemm")):
        node.name = name
    quantized = apply_to_proto(model, QuantizeWeightsPass({"conv": QuantSpec(8, True, "per_channel"), "gemm": QuantSpec(3, True, "per_tensor")}))
    onnx.checker.check_model(quantized, full_check=True)
    kinds = {n.input[0]: n.op_type for n in quantized.graph.node if n.domain == "zsq"}
    assert kinds == {"w": "StaticQuantize", "fc": "StaticQuantizeClip"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    np.testing.assert_allclose(inits["w.zsq_scale"], np.array([2.0, 0.5, 3.0]) / 127, rtol=1e-6)
    assert inits["fc.zsq_scale"].shape == () and inits["fc.zsq_qmax"] == 3
    np.testing.assert_allclose(run(quantized, sample()), run(model, sample()), atol=1.0)


def test_nodes_without_a_spec_stay_float():
    model = parse_model(CONV_BN)
    unchanged = apply_to_proto(model, QuantizeWeightsPass({}))
    assert [(n.op_type, list(n.input)) for n in unchanged.graph.node] == [(n.op_type, list(n.input)) for n in model.graph.node]
