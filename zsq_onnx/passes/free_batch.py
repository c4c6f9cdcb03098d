"""Make a fixed batch dimension symbolic, so a model exported for one batch size runs at any."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

logger = logging.getLogger(__name__)


class FreeBatchPass(ir.passes.InPlacePass):
    """Give the graph inputs (and the outputs that share it) the symbolic batch ``symbol`` in place
    of the fixed size they all start with.

    Intermediate shapes are forgotten and inferred again. A Reshape whose constant target shape
    starts with the fixed size while its data starts with the batch (the dynamo exporter's
    ``view(batch, -1)``) copies the batch instead (0; -1 when ``allowzero`` and a zero in the
    target shape make 0 a size). Graphs whose inputs start with different sizes are left as they
    are.
    """

    def __init__(self, symbol: str = "batch") -> None:
        super().__init__()
        self.symbol = symbol

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        inputs = [value for value in graph.inputs if value.const_value is None and value.shape is not None and len(value.shape) > 0]
        sizes = {value.shape[0] for value in inputs}
        if len(sizes) != 1 or not isinstance(next(iter(sizes)), int):
            logger.debug("free batch skips %s: its inputs start with %s, not one fixed size", graph.name, sorted(map(str, sizes)))
            return ir.passes.PassResult(model, modified=False)
        batch = next(iter(sizes))
        freed = {value.name: ir.Shape([self.symbol, *value.shape[1:]]) for value in (*inputs, *graph.outputs)
                 if value.shape is not None and len(value.shape) > 0 and value.shape[0] == batch}
        self._infer(model, freed)
        while self._copy_batch_in_reshapes(graph, batch):
            self._infer(model, freed)
        return ir.passes.PassResult(model, modified=True)

    def _infer(self, model: ir.Model, freed: dict[str, ir.Shape]) -> None:
        """Give the inputs and outputs their ``freed`` shapes, forget the intermediate ones and
        infer them again from the inputs."""
        graph = model.graph
        for value in (*graph.inputs, *graph.outputs):
            if value.name in freed:
                value.shape = freed[value.name]
        outputs = set(map(id, graph.outputs))
        for node in graph:
            for value in node.outputs:
                if id(value) not in outputs:
                    value.shape = None
        ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)(model)

    def _copy_batch_in_reshapes(self, graph: ir.Graph, batch: int) -> bool:
        """Rewrite the Reshapes that bake in ``batch``; whether any was."""
        changed = False
        for node in graph:
            if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
                continue
            data, target = node.inputs[0], node.inputs[1]
            if target.const_value is None or data.shape is None or len(data.shape) == 0 or data.shape[0] != ir.SymbolicDim(self.symbol):
                continue
            dims = target.const_value.numpy().astype(np.int64)
            if len(dims) == 0 or dims[0] != batch:
                continue
            if node.attributes.get_int("allowzero", 0) and 0 in dims[1:]:
                if -1 in dims[1:]:
                    logger.debug("free batch skips %s: its target shape %s holds zeros and already infers one dimension", node.name, dims.tolist())
                    continue
                dims[0] = -1
            else:
                dims[0] = 0
                node.attributes.pop("allowzero", None)
            copied = ir.val(f"{target.name}.batch", const_value=ir.tensor(dims, name=f"{target.name}.batch"))
            graph.register_initializer(copied)
            node.replace_input_with(1, copied)
            logger.debug("free batch: %s now copies the batch (target shape %s)", node.name, dims.tolist())
            changed = True
        return changed
