"""Sequential empirical bias correction (as NNCF's BiasCorrection): weighted layers in graph
order, each one's input mean measured in ORT on the calibration batches twice, in the float
graph and in the quantized graph whose earlier layers are already corrected; BiasCorrectionPass
then sets the layer's bias so that its mean output on those batches is the float layer's.

Measuring the quantized graph, not only the float one, also cancels the mean drift that clipped
or rounded activations and upstream layers leave in each layer's input, at the cost of one ORT
run over the batches per layer."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.bias_correction import BiasCorrectionPass
from zsq_onnx.plan.calibrate import input_means

logger = logging.getLogger(__name__)


class SequentialBiasCorrectionPass(ir.passes.InPlacePass):
    """Correct the float biases of ``nodes`` (quantized weights, biases not yet quantized) one
    layer at a time against ``reference`` (the float graph the model came from), measured on
    ``batches``. After a call, ``shifts`` holds the largest |bias change| per corrected node."""

    def __init__(self, reference: ir.Model, nodes: Collection[str], batches: Sequence[np.ndarray]) -> None:
        super().__init__()
        self.reference = reference
        self.nodes = nodes
        self.batches = batches
        self.shifts: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        reference = input_means(self.reference, self.nodes, self.batches)
        self.shifts = {}
        for name in [node.name for node in model.graph if node.name in reference]:
            correction = BiasCorrectionPass({name: reference[name]}, input_means(model, {name}, self.batches))
            correction(model)
            self.shifts.update(correction.shifts)
        logger.info("bias correction: %d of %d layers corrected", len(self.shifts), len(reference))
        return ir.passes.PassResult(model, modified=bool(self.shifts))
