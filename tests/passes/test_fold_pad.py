"""FoldPadIntoConvPass."""

from __future__ import annotations

import numpy as np

from tests.conftest import parse_model
from tests.passes.graphs import apply_to_proto, run, sample
from zsq_onnx.passes.fold_pad import FoldPadIntoConvPass

SAME_PAD = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 2, 2] y)
<float[2, 1, 3, 3] w = {1., -2., 0.5, 0.25, 3., -1., 2., 0., 1., 1., 1., -1., 0.5, 2., -2., 0.25, 0., 3.},
 int64[8] pads = {0, 0, 0, 0, 0, 0, 1, 1}, float value = {VALUE}>
{
  r = Clip (x)
  p = Pad <mode = "MODE"> (r, pads, value)
  y = Conv <group = 2, strides = [2, 2], pads = [0, 0, 0, 0]> (p, w)
}
"""


def _model(value: str = "0.", mode: str = "constant"):
    return parse_model(SAME_PAD.replace("VALUE", value).replace("MODE", mode))


def test_zero_spatial_pad_becomes_conv_pads():
    model = _model()
    folded = apply_to_proto(model, FoldPadIntoConvPass())
    assert [n.op_type for n in folded.graph.node] == ["Clip", "Conv"]
    pads = next(a for a in folded.graph.node[1].attribute if a.name == "pads")
    assert list(pads.ints) == [0, 0, 1, 1]
    np.testing.assert_allclose(run(folded, sample()), run(model, sample()), atol=1e-6)


def test_non_zero_value_and_other_modes_keep_the_pad():
    for model in (_model(value="1."), _model(mode="reflect")):
        assert "Pad" in [n.op_type for n in apply_to_proto(model, FoldPadIntoConvPass()).graph.node]
