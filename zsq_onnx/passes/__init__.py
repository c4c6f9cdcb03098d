"""Graph passes on onnx_ir models, one per file; none of them imports torch."""

from __future__ import annotations

import onnx
import onnx_ir as ir


def apply_passes(model: onnx.ModelProto, *passes: ir.passes.PassBase) -> onnx.ModelProto:
    """Run ``passes`` in order on a ModelProto and return the resulting ModelProto."""
    ir_model = ir.serde.deserialize_model(model)
    ir_model = ir.passes.Sequential(*passes)(ir_model).model
    return ir.serde.serialize_model(ir_model)
