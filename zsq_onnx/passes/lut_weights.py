"""Store lookup-table quantized weights as their integer codes, decoded by Cast -> Gather -> Mul."""

from __future__ import annotations

import logging

import onnx_ir as ir

from zsq_onnx.passes.fold_constants import KEEP_UNFOLDED
from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.quantizers.lut import LUT, codes
from zsq_onnx.quantizers.registry import Role, input_for, kind_of

logger = logging.getLogger(__name__)

class LutWeightsPass(ir.passes.InPlacePass):
    """Each zsq lookup-table quantizer of a constant weight becomes its codes, stored as uint4
    where the table has at most 16 levels and the target loads 4-bit types (else uint8), read
    by Cast(int32) -> Gather(table) -> Mul(alpha): the file holds k-bit codes, the 2^k - 1 table
    entries and one alpha per channel, and ORT decodes them to exactly the levels the quantizer
    computed. Runs before the quantizer functions are inlined, and marks the decoding
    :data:`~zsq_onnx.passes.fold_constants.KEEP_UNFOLDED` so that folding keeps it."""

    def __init__(self, use_4bit_types: bool) -> None:
        super().__init__()
        self.use_4bit_types = use_4bit_types

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if kind_of(node) is not LUT:
                continue
            weight, alpha, table = (input_for(node, role) for role in (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE))
            if any(value.const_value is None for value in (weight, alpha, table)):
                logger.debug("lut weights skips %s: its weight, alpha or table is not a constant", node.name)
                continue
            table_size = table.const_value.size
            container = ir.DataType.UINT4 if self.use_4bit_types and table_size <= 16 else ir.DataType.UINT8
            stored = new_initializer(graph, f"{weight.name}.codes", codes(weight.const_value.numpy(), alpha.const_value.numpy(), table.const_value.numpy()), container)
            cast = ir.node("Cast", [stored], attributes={"to": ir.DataType.INT32}, name=f"{node.name}/cast")
            gather = ir.node("Gather", [table, cast.outputs[0]], attributes={"axis": 0}, name=f"{node.name}/gather")
            scaled = ir.node("Mul", [gather.outputs[0], alpha], name=f"{node.name}/scale")
            output = node.outputs[0]
            cast.outputs[0].name, gather.outputs[0].name = f"{weight.name}.code_index", f"{weight.name}.levels"
            for decoding in (cast, gather):
                decoding.meta[KEEP_UNFOLDED] = True
            graph.insert_after(node, [cast, gather, scaled])
            output.replace_all_uses_with(scaled.outputs[0], replace_graph_outputs=output.is_graph_output())
            graph.remove(node, safe=True)
            scaled.outputs[0].name = output.name
            scaled.outputs[0].shape, scaled.outputs[0].type = weight.shape, weight.type
            logger.debug("lut weights: %s stored as %d %s codes into %d levels", weight.name, weight.const_value.size, container.name.lower(), table_size)
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
