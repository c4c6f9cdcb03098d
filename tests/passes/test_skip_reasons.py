"""Passes say at DEBUG why they leave a candidate node alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from zsq_onnx.passes.fold_pad import FoldPadIntoConvPass
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.recipe import QuantSpec

GRAPH = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 5, 5] y)
<float[2, 2, 1, 1] w = {1., -1., 0.5, 2.}, float[2] gamma = {1., 2.}, float[2] beta = {0.1, 0.}, float[2] mean = {0.5, -1.},
 float[2] var = {1., 4.}, int64[8] pads = {0, 0, 0, 0, 0, 0, 1, 1}>
{
  [relu] r = Relu (x)
  [bn] b = BatchNormalization (r, gamma, beta, mean, var)
  [pad] p = Pad <mode = "reflect"> (b, pads)
  [conv] y = Conv (p, w)
}
"""

CASES = {
    "fold-batchnorm": (FoldBatchNormPass(), "fold batchnorm skips bn: its input comes from Relu, not a Conv or Gemm"),
    "fold-pad": (FoldPadIntoConvPass(), "fold pad skips pad: not a zero constant pad of spatial axes"),
    "quantize-weights": (QuantizeWeightsPass({}), "quantize weights skips conv: the plan keeps its weight float"),
    "quantize-activations": (
        QuantizeActivationsPass({"x": QuantSpec()}, {"x": (np.array(-1.0), np.array(1.0))}, ["weighted-op-input"]),
        "quantize activations skips conv: the plan keeps its input p float",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_skipped_candidate_is_logged_with_its_reason(caplog, case):
    graph_pass, message = CASES[case]
    with caplog.at_level(logging.DEBUG, logger="zsq_onnx.passes"):
        apply_to_proto(parse_model(GRAPH), graph_pass)
    assert message in [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]
