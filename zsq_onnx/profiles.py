"""Deployment targets: lower the zsq functions to plain QDQ and check the result."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from zsq_onnx.errors import BadInputError
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.fold_constants import KEPT_OPS, FoldConstantsPass


@dataclass(frozen=True)
class Profile:
    """A deployment target: its name and what it is for."""

    name: str
    description: str


PROFILES = {
    "ort-cpu": Profile("ort-cpu", "ONNX Runtime CPU: int8 per-channel weights, uint8 per-tensor activations (QLinearConv)"),
}


def emit(model: onnx.ModelProto, profile: str = "ort-cpu") -> onnx.ModelProto:
    """Lower a model with zsq quantizers for ``profile``: inline the functions to QuantizeLinear/
    DequantizeLinear, store quantized weights as integer initializers, and run the full checker."""
    if profile not in PROFILES:
        raise BadInputError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    lowered = apply_passes(
        model,
        InlinePass(),
        RemoveUnusedFunctionsPass(),
        FoldConstantsPass(kept_ops=KEPT_OPS - {"QuantizeLinear"}),
        RemoveUnusedNodesPass(),
        RemoveUnusedOpsetsPass(),
    )
    onnx.checker.check_model(lowered, full_check=True)
    return lowered
