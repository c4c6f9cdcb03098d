"""Graph passes on onnx_ir models, one per file; none of them imports torch."""

from __future__ import annotations

import onnx_ir as ir

from zsq_onnx.errors import ZsqError


def apply_passes(model: ir.Model, *passes: ir.passes.PassBase) -> ir.Model:
    """Run ``passes`` in order on a copy of ``model`` (its tensors shared, not copied) and
    return the result; ``model`` itself is left as it was, so a stage can build several
    variants of one graph.

    A ZsqError raised inside a pass reaches the caller as itself, not wrapped in a PassError."""
    try:
        return ir.passes.Sequential(*passes)(model.clone()).model
    except ir.passes.PassError as exc:
        if isinstance(exc.__cause__, ZsqError):
            raise exc.__cause__ from None
        raise
