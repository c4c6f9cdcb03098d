"""FoldBatchNormPass."""

from __future__ import annotations

import numpy as np

from tests.conftest import parse_model
from tests.passes.graphs import CONV_BN, apply_to_proto, run, sample
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass


def test_removes_bn_and_keeps_outputs():
    model = parse_model(CONV_BN)
    folded = apply_to_proto(model, FoldBatchNormPass())
    assert "BatchNormalization" not in [n.op_type for n in folded.graph.node]
    np.testing.assert_allclose(run(folded, sample()), run(model, sample()), atol=1e-5)
