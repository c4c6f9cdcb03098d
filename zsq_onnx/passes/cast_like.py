"""Turn CastLike into Cast where the target's element type is known, so constant operands fold."""

from __future__ import annotations

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)


class CastLikeToCastPass(ir.passes.InPlacePass):
    """Replace ``CastLike(x, like)`` by ``Cast<to=like's type>(x)`` when ``like`` has a known type.

    The dynamo exporter writes scalars such as a Clip's bounds or a bias-free Conv's zero bias as
    ``CastLike(constant, activation)``: the activation is not constant, so the node cannot fold,
    although only its element type is read. As a Cast the node folds to an initializer.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type != "CastLike" or node.domain not in ("", "ai.onnx"):
                continue
            like = node.inputs[1]
            if like is None or like.dtype is None:
                logger.debug("cast-like to cast skips %s: the element type of its second input is unknown", node.name)
                continue
            attributes = {"to": like.dtype.value}
            if "saturate" in node.attributes:
                attributes["saturate"] = node.attributes.get_int("saturate")
            cast = ir.node("Cast", [node.inputs[0]], attributes, name=node.name)
            ir.convenience.replace_nodes_and_values(model.graph, node, [node], [cast], list(node.outputs), list(cast.outputs))
            modified = True
        return ir.passes.PassResult(model, modified=modified)
