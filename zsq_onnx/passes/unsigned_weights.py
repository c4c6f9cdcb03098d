"""Store the int8 weights of saturating integer kernels as uint8, shifted by 128."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.ort_kernels import saturating_kernel
from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.plan.targets import weight_axis

logger = logging.getLogger(__name__)

SHIFT = 128


def _shifted(array: np.ndarray) -> np.ndarray:
    """The int8 ``array`` + 128, as uint8."""
    return (array.astype(np.int16) + SHIFT).astype(np.uint8)


class UnsignedWeightsPass(ir.passes.InPlacePass):
    """A layer that ORT CPU fuses into a u8 x s8 integer kernel which can saturate on x86 CPUs
    without VNNI (see :func:`~zsq_onnx.passes.ort_kernels.saturating_kernel`) gets its int8
    weights and zero points stored as uint8 + 128: DequantizeLinear gives the same floats, and
    ORT fuses a u8 x u8 kernel instead, which widens to 16 bits and is exact. The simulation
    profile uses it so its QDQ graph is what ORT computes on every CPU at every level."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in [node for node in graph if weight_axis(node) is not None]:
            if not saturating_kernel(node):
                logger.debug("unsigned weights skips %s: ORT CPU does not fuse it into a saturating u8 x s8 kernel", node.name)
                continue
            dequantize = node.inputs[1].producer()
            weights, scale = dequantize.inputs[0], dequantize.inputs[1]
            zero_point = dequantize.inputs[2] if len(dequantize.inputs) > 2 else None
            zeros = zero_point.const_value.numpy() if zero_point is not None else np.zeros(scale.const_value.shape.numpy(), np.int8)
            dequantize.resize_inputs(3)
            for index, array, name in ((0, weights.const_value.numpy(), f"{weights.name}.u8"), (2, zeros, f"{weights.name}.zero_point.u8")):
                dequantize.replace_input_with(index, new_initializer(graph, name, _shifted(array)))
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
