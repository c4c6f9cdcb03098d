"""Lookup-table weights: inserted by QuantizeWeightsPass, emitted by LutWeightsPass as k-bit codes
decoded by Cast -> Gather -> Mul, equal to the torch simulation; bias correction reads them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from tests.conftest import parse_model, to_proto
from tests.passes.graphs import apply_to_proto, emit_proto, run
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.passes.bias_correction import BiasCorrectionPass, quantized_weight
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import ORT_CPU, SIM
from zsq_onnx.quantizers.lut import codes, level_table
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.validate.inspection import quantizer_table

rng = np.random.default_rng(0)
WEIGHT = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
CONV = f"""
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 3, 6, 6] x) => (float[N, 8, 6, 6] y)
<float[8, 3, 3, 3] w = {{{", ".join(map(str, WEIGHT.ravel().tolist()))}}}, float[8] b = {{{", ".join(["0.1"] * 8)}}}>
{{
  y = Conv <pads = [1, 1, 1, 1]> (x, w, b)
}}
"""


def _quantized(bits: int, levels: str) -> onnx.ModelProto:
    model = parse_model(CONV)
    model.graph.node[0].name = "conv"
    return apply_to_proto(model, QuantizeWeightsPass({"conv": QuantSpec(bits, True, "per_channel", levels)}))


@pytest.mark.parametrize(("profile", "bits", "container"), [(SIM, 4, onnx.TensorProto.UINT4), (SIM, 3, onnx.TensorProto.UINT4),
                                                             (SIM, 5, onnx.TensorProto.UINT8), (ORT_CPU, 4, onnx.TensorProto.UINT8)])
@pytest.mark.parametrize("levels", ["post", "pot"])
def test_emitted_codes_decode_to_what_ort_and_torch_compute_on_the_quantizer(profile, bits, container, levels):
    quantized = _quantized(bits, levels)
    assert [n.op_type for n in quantized.graph.node] == ["LutWeightQuantize", "Conv"]
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    intermediate = run(quantized, x)
    model = ir.serde.deserialize_model(quantized)
    with torch.no_grad():
        simulated = TorchGraph(model).run({"x": torch.from_numpy(x)}, ["w.zsq_out", "y"])
    by_ort = make_session(with_outputs(model, ["w.zsq_out"])).run(["w.zsq_out"], {"x": x})[0]
    np.testing.assert_array_equal(by_ort, simulated["w.zsq_out"].numpy())
    np.testing.assert_allclose(intermediate, simulated["y"].numpy(), rtol=1e-5, atol=1e-5)
    emitted = emit_proto(quantized, profile)
    ops = [n.op_type for n in emitted.graph.node]
    assert ops == ["Cast", "Gather", "Mul", "Conv"], ops
    stored = {t.name: t for t in emitted.graph.initializer}
    assert stored["w.codes"].data_type == container and list(stored["w.codes"].dims) == [8, 3, 3, 3]
    table = onnx.numpy_helper.to_array(stored["w.zsq_table"])
    alpha = onnx.numpy_helper.to_array(stored["w.zsq_alpha"])
    np.testing.assert_array_equal(table, level_table(levels, bits))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(stored["w.codes"]).astype(np.int64), codes(WEIGHT, alpha, table))
    decoded = make_session(with_outputs(ir.serde.deserialize_model(emitted), ["w.zsq_out"])).run(["w.zsq_out"], {"x": x})[0]
    np.testing.assert_array_equal(decoded, by_ort)
    np.testing.assert_allclose(make_session(emitted).run(None, {"x": x})[0], intermediate, rtol=1e-5, atol=1e-5)
    row = quantizer_table(ir.serde.deserialize_model(emitted))[0]
    assert (row["tensor"], row["levels"], row["bits"], row["scale_max"]) == ("w", levels, bits, pytest.approx(float(alpha.max())))
    assert row["table"] == [float(level) for level in table]


def test_bias_correction_reads_lookup_table_weights():
    quantized = ir.serde.deserialize_model(_quantized(3, "post"))
    node = next(n for n in quantized.graph if n.op_type == "LutWeightQuantize")
    weight, dequantized = quantized_weight(node)
    np.testing.assert_array_equal(weight, WEIGHT)
    alpha = node.inputs[1].const_value.numpy()
    np.testing.assert_array_equal(dequantized, level_table("post", 3)[codes(WEIGHT, alpha, level_table("post", 3))] * alpha)
    means = {"conv": np.full(3, 0.5, np.float32)}
    BiasCorrectionPass(means)(quantized)
    bias = next(n for n in quantized.graph if n.op_type == "Conv").inputs[2].const_value.numpy()
    shift = ((dequantized - WEIGHT).sum(axis=(2, 3)) @ means["conv"]).astype(np.float32)
    np.testing.assert_allclose(bias, 0.1 - shift, rtol=1e-5, atol=1e-6)
    assert to_proto(quantized).graph.node[0].op_type == "LutWeightQuantize"
