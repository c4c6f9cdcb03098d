"""Name the integer weights that emission folded after the float weights they came from."""

from __future__ import annotations

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)

QUANTIZER_SUFFIX = ".zsq_out"


class NameQuantizedWeightsPass(ir.passes.InPlacePass):
    """``DequantizeLinear(q_7, ...) -> conv1.weight.zsq_out`` gets its integer initializer renamed
    ``conv1.weight.quantized``, so the emitted model reads like the source model."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in graph:
            if node.op_type != "DequantizeLinear" or not node.outputs[0].name.endswith(QUANTIZER_SUFFIX):
                continue
            stored = node.inputs[0]
            target = node.outputs[0].name.removesuffix(QUANTIZER_SUFFIX) + ".quantized"
            if stored is None or not stored.is_initializer() or stored.name == target:
                continue
            if target in graph.initializers:
                logger.debug("name quantized weights skips %s: another initializer is called %s", node.name, target)
                continue
            graph.initializers.pop(stored.name)
            stored.name = target
            graph.register_initializer(stored)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
