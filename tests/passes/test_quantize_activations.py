"""QuantizeActivationsPass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.conftest import parse_model
from tests.passes.graphs import RESIDUAL, apply_to_proto, run, sample
from zsq_onnx.errors import InternalError
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.recipe import QuantSpec

RULES = ("weighted-op-input", "residual-add-input")


def test_one_shared_quantizer_per_tensor():
    model = parse_model(RESIDUAL)
    spec = QuantSpec(8, False)
    ranges = {"x": (np.array(-4.0), np.array(4.0)), "r": (np.array(0.0), np.array(8.0)), "c": (np.array([-8.0, -6.0]), np.array([8.0, 7.0]))}
    quantized = apply_to_proto(model, QuantizeActivationsPass({"x": spec, "r": spec, "c": QuantSpec(8, False, "per_channel")}, ranges, RULES))
    onnx.checker.check_model(quantized, full_check=True)
    zsq = [n for n in quantized.graph.node if n.domain == "zsq"]
    assert sorted(n.input[0] for n in zsq) == ["c", "r", "x"]
    uses = [list(n.input) for n in quantized.graph.node if n.op_type in ("Conv", "Add")]
    assert uses[0][0] == "x.zsq_out" and uses[2] == ["c.zsq_out", "x.zsq_out"] and uses[3][0] == "s"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    assert inits["c.zsq_scale"].shape == (2,) and inits["x.zsq_zero_point"].dtype == np.uint8
    np.testing.assert_allclose(run(quantized, sample()), run(model, sample()), atol=0.1)


def test_missing_range_is_an_internal_error():
    with pytest.raises(InternalError, match="no calibrated range"):
        apply_to_proto(parse_model(RESIDUAL), QuantizeActivationsPass({"x": QuantSpec()}, {}, RULES))
