"""Fold BatchNormalization into the Conv or Gemm that feeds it (after synthesis used the stats)."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet, rewrite
from onnxscript.rewriter.rules.common import fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_gemm_rule


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold every foldable BatchNormalization (onnxscript's bit-identical fusion rules)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for node in model.graph if node.op_type == "BatchNormalization")
        rules = RewriteRuleSet([fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_gemm_rule])
        model = rewrite(model, pattern_rewrite_rules=rules)
        after = sum(1 for node in model.graph if node.op_type == "BatchNormalization")
        return ir.passes.PassResult(model, modified=after < before)
