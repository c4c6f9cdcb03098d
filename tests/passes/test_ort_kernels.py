"""ort_kernels: which QDQ layers ORT CPU runs as integer kernels, and which of those saturate."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from tests.conftest import parse_model
from zsq_onnx.passes.ort_kernels import integer_kernel, integer_span, saturating_kernel
from zsq_onnx.validate.diagnostics import ort_fusion

PER_TENSOR = "float s = {0.02}, uint8 z = {0}"
PER_CHANNEL = "float[2] s = {0.02, 0.03}, uint8[2] z = {0, 0}"

# QDQ input (LEVELS: clipped k or full-range q), int8 weights, an activation, QDQ output.
QDQ_CONV = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y)
<int8[2, 2, 1, 1] wq = {WEIGHTS}, float[2] ws = {0.01, 0.02}, INPUT_PARAMS,
 uint8 lo8 = {0}, uint8 hi8 = {15}, float lo = {0.}, float hi = {6.}, float os = {OUTPUT_SCALE}, OUTPUT_TYPE oz = {0}>
{
  q = QuantizeLinear <axis = 1> (x, s, z)
  k = Clip (q, lo8, hi8)
  d = DequantizeLinear <axis = 1> (LEVELS, s, z)
  w = DequantizeLinear <axis = 0> (wq, ws)
  c = Conv (INPUT, w)
  a = ACTIVATION
  oq = QuantizeLinear (a, os, oz)
  y = DequantizeLinear (oq, os, oz)
}
"""


def _model(
    activation: str = "Relu (c)", output_scale: str = "0.1", output_type: str = "uint8", input_: str = "d", input_params: str = PER_TENSOR,
    weights: str = "127, -127, 5, 3", levels: str = "q",
) -> ir.Model:
    """QDQ_CONV with the given parts."""
    parts = {"ACTIVATION": activation, "OUTPUT_SCALE": output_scale, "OUTPUT_TYPE": output_type, "(INPUT,": f"({input_},",
             "INPUT_PARAMS": input_params, "WEIGHTS": weights, "LEVELS": levels}
    text = QDQ_CONV
    for key, part in parts.items():
        text = text.replace(key, part)
    return ir.serde.deserialize_model(parse_model(text))


def _conv(model: ir.Model) -> ir.Node:
    return next(node for node in model.graph if node.op_type == "Conv")


@pytest.mark.parametrize(
    ("parts", "fused"),
    [
        ({}, True),
        ({"activation": "Sigmoid (c)"}, False),  # no integer kernel for Conv + Sigmoid
        ({"input_": "x"}, False),  # float input
        ({"levels": "k"}, True),  # input levels clipped to 0..15 in the uint8 container
        ({"activation": "Clip (c, lo, hi)", "output_scale": "0.023529412"}, True),  # ReLU6 holding the uint8 range 0..6: dropped
        ({"activation": "Clip (c, lo, hi)", "output_scale": "0.1"}, False),  # the uint8 range reaches 25.5: the Clip stays
        ({"activation": "MaxPool <kernel_shape = [1, 1]> (c)"}, True),  # ORT moves the QuantizeLinear back across the MaxPool (a ResNet stem)
    ],
)
def test_integer_kernel_is_what_ort_fuses(parts, fused):
    model = _model(**parts)
    assert integer_kernel(_conv(model)) is fused
    assert ort_fusion(model)["integer_ops"] == ({"QLinearConv": 1} if fused else {})


@pytest.mark.parametrize(
    "parts",
    [
        {"input_params": PER_CHANNEL},  # ORT fuses it into a QLinearConv that fails at run time
        {"activation": "Clip (c, lo, hi)", "output_scale": "0.4", "output_type": "uint4"},  # ORT's Clip + 4-bit QuantizeLinear fusion fails to load
    ],
)
def test_no_integer_kernel_with_per_channel_input_or_4bit_output(parts):
    assert not integer_kernel(_conv(_model(**parts)))


def test_conv_whose_output_is_not_quantized_runs_in_float():
    conv = _conv(_model())
    relu = next(user for user, _ in conv.outputs[0].uses())
    quantize = next(user for user, _ in relu.outputs[0].uses())
    quantize.replace_input_with(0, conv.inputs[0])
    assert not integer_kernel(conv)


GEMM = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2] x) => (float[N, 3] y)
<float[3, 2] w = {1., 0., 0.5, -1., 2., 0.25}, INPUT_PARAMS>
{
  q = QuantizeLinear <axis = 1> (x, s, z)
  d = DequantizeLinear <axis = 1> (q, s, z)
  y = Gemm <transB = 1> (d, w)
}
"""


@pytest.mark.parametrize(("input_params", "fused"), [(PER_TENSOR, True), (PER_CHANNEL, False)])
def test_gemm_needs_only_a_per_tensor_input(input_params, fused):
    graph = ir.serde.deserialize_model(parse_model(GEMM.replace("INPUT_PARAMS", input_params))).graph
    assert integer_kernel(next(node for node in graph if node.op_type == "Gemm")) is fused


def test_integer_span_reads_constants_clips_and_containers():
    conv = _conv(_model(levels="k"))
    assert integer_span(conv.inputs[1]) == 127  # weight levels
    assert integer_span(conv.inputs[0]) == 15  # input clipped to 0..15
    assert integer_span(conv.inputs[0].producer().inputs[0]) == 0  # the Clip's output is not dequantized
    assert integer_span(_conv(_model()).inputs[0]) == 255  # the uint8 container


@pytest.mark.parametrize(
    ("parts", "saturates"),
    [
        ({}, True),  # 2 x 255 x 127 > 32767
        ({"weights": "63, -63, 5, 3"}, False),  # 2 x 255 x 63 fits int16
        ({"levels": "k"}, False),  # input levels 0..15
        ({"input_": "x"}, False),  # no integer kernel
    ],
)
def test_saturating_kernel(parts, saturates):
    assert saturating_kernel(_conv(_model(**parts))) is saturates
