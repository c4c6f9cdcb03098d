"""Graph passes on onnx_ir models, one per file; none of them imports torch."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from zsq_onnx.errors import ZsqError


def apply_passes(model: onnx.ModelProto, *passes: ir.passes.PassBase) -> onnx.ModelProto:
    """Run ``passes`` in order on a ModelProto and return the resulting ModelProto.

    A ZsqError raised inside a pass reaches the caller as itself, not wrapped in a PassError."""
    ir_model = ir.serde.deserialize_model(model)
    try:
        ir_model = ir.passes.Sequential(*passes)(ir_model).model
    except ir.passes.PassError as exc:
        if isinstance(exc.__cause__, ZsqError):
            raise exc.__cause__ from None
        raise
    return ir.serde.serialize_model(ir_model)
