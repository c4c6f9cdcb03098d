"""NameQuantizedWeightsPass."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import run, sample
from zsq_onnx.passes.name_quantized_weights import NameQuantizedWeightsPass

# What emission leaves of a weight quantizer: folded integer levels under a generated name
# (k: a computed copy of them).
FOLDED_WEIGHT = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<int8[2, 2, 1, 1] STORED = {100, -50, 25, 127}, float[2] s = {0.01, 0.02}, float[1] EXTRA = {0.}>
{
  k = Identity (STORED)
  WEIGHT = DequantizeLinear <axis = 0> (SOURCE, s)
  y = Conv (x, WEIGHT)
}
"""


def _model(weight: str = '"conv1.weight.zsq_out"', stored: str = "q_7", source: str = "STORED", extra: str = "unused") -> ir.Model:
    text = FOLDED_WEIGHT.replace("WEIGHT", weight).replace("SOURCE", source).replace("STORED", stored).replace("EXTRA", extra)
    return ir.serde.deserialize_model(parse_model(text))


def test_integer_weight_takes_the_float_weight_name():
    model = _model()
    expected = run(ir.serde.serialize_model(model), sample())
    assert NameQuantizedWeightsPass()(model).modified
    dequantize = next(node for node in model.graph if node.op_type == "DequantizeLinear")
    assert dequantize.inputs[0].name == "conv1.weight.quantized" and "q_7" not in model.graph.initializers
    assert model.graph.initializers["conv1.weight.quantized"] is dequantize.inputs[0]
    np.testing.assert_array_equal(dequantize.inputs[0].const_value.numpy(), np.array([100, -50, 25, 127], np.int8).reshape(2, 2, 1, 1))
    np.testing.assert_array_equal(run(ir.serde.serialize_model(model), sample()), expected)


@pytest.mark.parametrize(
    "parts",
    [
        {"weight": "w"},  # not a zsq quantizer's output
        {"extra": '"conv1.weight.quantized"'},  # the name is taken
        {"stored": '"conv1.weight.quantized"'},  # already named so
        {"source": "k"},  # not an initializer
    ],
)
def test_other_dequantized_values_keep_their_names(parts):
    model = _model(**parts)
    names = sorted(model.graph.initializers)
    assert not NameQuantizedWeightsPass()(model).modified
    assert sorted(model.graph.initializers) == names
