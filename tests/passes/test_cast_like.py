"""CastLikeToCastPass."""

from __future__ import annotations

import onnx

from tests.conftest import parse_ir, parse_model
from tests.passes.graphs import apply_to_proto
from zsq_onnx.passes.cast_like import CastLikeToCastPass
from zsq_onnx.passes.fold_constants import FoldConstantsPass


def test_cast_like_of_a_constant_becomes_a_cast_that_folds():
    model = parse_model(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 2] x) => (float[N, 2] y)
        <double low = {0.0}, float high = {6.0}>
        {
          lo = CastLike (low, x)
          y = Clip (x, lo, high)
        }
        """
    )
    cast = apply_to_proto(model, CastLikeToCastPass())
    assert [(n.op_type, [a.i for a in n.attribute]) for n in cast.graph.node] == [("Cast", [onnx.TensorProto.FLOAT]), ("Clip", [])]
    folded = apply_to_proto(model, CastLikeToCastPass(), FoldConstantsPass())
    assert [n.op_type for n in folded.graph.node] == ["Clip"]
    low = next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[1])
    assert low.data_type == onnx.TensorProto.FLOAT


def test_cast_like_to_an_untyped_value_is_kept():
    model = parse_ir(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[N, 2] x, float[N, 2] like) => (float[N, 2] y)
        {
          y = CastLike (x, like)
        }
        """
    )
    model.graph.inputs[1].type = None
    result = CastLikeToCastPass()(model)
    assert not result.modified
    assert [n.op_type for n in result.model.graph] == ["CastLike"]
