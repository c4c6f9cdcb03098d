"""Fold BatchNormalization into the Conv or Gemm that feeds it (after synthesis used the stats)."""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet, rewrite
from onnxscript.rewriter.rules.common import fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_gemm_rule

logger = logging.getLogger(__name__)


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold every foldable BatchNormalization (onnxscript's bit-identical fusion rules)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for node in model.graph if node.op_type == "BatchNormalization")
        rules = RewriteRuleSet([fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_gemm_rule])
        model = rewrite(model, pattern_rewrite_rules=rules)
        kept = [node for node in model.graph if node.op_type == "BatchNormalization"]
        for node in kept:
            logger.debug("fold batchnorm skips %s: %s", node.name, _kept_reason(node))
        return ir.passes.PassResult(model, modified=len(kept) < before)


def _kept_reason(batchnorm: ir.Node) -> str:
    """Why onnxscript's fusion rules left ``batchnorm`` in the graph."""
    producer = batchnorm.inputs[0].producer()
    if producer is None or producer.op_type not in ("Conv", "Gemm"):
        return f"its input comes from {producer.op_type if producer is not None else 'a graph input'}, not a Conv or Gemm"
    if len(producer.outputs[0].uses()) > 1:
        return f"the output of {producer.name} is read by other nodes too"
    return f"its statistics or the weights of {producer.name} are not constant initializers of their own"
