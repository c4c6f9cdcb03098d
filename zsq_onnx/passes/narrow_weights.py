"""Store integer weights whose levels fit 4 bits as int4/uint4, so 2- and 3-bit weights take half
a byte on disk as 4-bit ones do."""

from __future__ import annotations

import logging

import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.quantizers.common import INTEGER_RANGES

logger = logging.getLogger(__name__)

NARROWER = {ir.DataType.INT8: ir.DataType.INT4, ir.DataType.UINT8: ir.DataType.UINT4}


def _fits(value: ir.Value | None, narrow: ir.DataType) -> bool:
    low, high = INTEGER_RANGES[int(narrow)]
    array = value.const_value.numpy()
    return array.size == 0 or (int(array.min()) >= low and int(array.max()) <= high)


class NarrowWeightContainersPass(ir.passes.InPlacePass):
    """A DequantizeLinear of a constant 8-bit weight whose levels and zero point all lie in the
    4-bit range (weights quantized to 2-4 bits held in an 8-bit container) reads them as
    int4/uint4 instead: the same values, half the bytes. Only for targets that load 4-bit types."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "DequantizeLinear" or not node.inputs[0].is_initializer():
                continue
            stored = node.inputs[0]
            zero_point = node.inputs[2] if len(node.inputs) > 2 else None
            narrow = NARROWER.get(stored.const_value.dtype)
            if narrow is None or (zero_point is not None and (not zero_point.is_initializer() or zero_point.const_value.dtype != stored.const_value.dtype)):
                continue
            if not _fits(stored, narrow) or (zero_point is not None and not _fits(zero_point, narrow)):
                logger.debug("narrow weight containers skips %s: its levels need 8 bits", node.name)
                continue
            for index, value in ((0, stored), (2, zero_point)):
                if value is not None:
                    _narrow(graph, node, index, value, narrow)
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)


def _narrow(graph: ir.Graph, node: ir.Node, index: int, value: ir.Value, narrow: ir.DataType) -> None:
    """``node`` reads ``value`` as ``narrow``; the new initializer takes over the name when no
    other node reads the 8-bit one."""
    narrowed = new_initializer(graph, f"{value.name}.{narrow.name.lower()}", value.const_value.numpy(), narrow)
    node.replace_input_with(index, narrowed)
    if not value.uses():
        name = value.name
        graph.initializers.pop(name)
        graph.initializers.pop(narrowed.name)
        narrowed.name = name
        graph.register_initializer(narrowed)
