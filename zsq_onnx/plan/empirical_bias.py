"""Empirical bias correction (DFQ's correction with measured means, as NNCF's fast bias
correction): each weighted layer's input mean is measured once in ORT on the calibration batches,
in the float graph, and BiasCorrectionPass sets the layer's bias so that the weight quantization
error adds nothing to its mean output on those inputs.

Only the float graph is measured, on purpose. Correcting also the drift that activation
quantization leaves in each layer's input (measuring the quantized graph layer by layer, as NNCF's
sequential correction does) fits that drift to the distilled samples, whose clipped tails are not
those of real inputs: on CIFAR ResNets it lowered the output SQNR on real images, while the weight
term, which needs only the input means that distillation matches, raises it on every model and
profile (README, "Bias correction on every CPU"). It is also one ORT pass instead of one per layer.

The output layers (those whose output reaches a graph output through no other weighted layer)
are left as they are: a classifier's correction is one offset per class logit, set by the mix of
classes in the distilled pool, which nothing ties to the classes real inputs have."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.bias_correction import BiasCorrectionPass
from zsq_onnx.plan.calibrate import input_means
from zsq_onnx.plan.targets import weight_axis

logger = logging.getLogger(__name__)


class EmpiricalBiasCorrectionPass(ir.passes.InPlacePass):
    """Correct the float biases of ``nodes`` (quantized weights, biases not yet quantized) by the
    input means of each node in ``reference`` (the float graph the model came from) on
    ``batches`` and the error of its quantized weight against its float weight there, output
    layers excepted. After a call, ``shifts`` holds the largest |bias change|
    per corrected node."""

    def __init__(self, reference: ir.Model, nodes: Collection[str], batches: Sequence[np.ndarray]) -> None:
        super().__init__()
        self.reference = reference
        self.nodes = nodes
        self.batches = batches
        self.shifts: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        outputs = output_layers(model.graph, self.nodes)
        corrected = [name for name in self.nodes if name not in outputs]
        means = input_means(self.reference, corrected, self.batches)
        correction = BiasCorrectionPass(means, float_weights(self.reference, set(corrected)))
        result = correction(model)
        self.shifts = correction.shifts
        logger.info("bias correction: %d of %d layers corrected (output layers kept: %s)", len(self.shifts), len(self.nodes), ", ".join(sorted(outputs)) or "none")
        return result


def float_weights(reference: ir.Model, nodes: Collection[str]) -> dict[str, np.ndarray]:
    """The constant weights of ``nodes`` in the float graph ``reference``: what the correction
    measures the quantization error against, whatever rounding rewrote since."""
    return {node.name: node.inputs[1].const_value.numpy() for node in reference.graph
            if node.name in nodes and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const_value is not None}


def output_layers(graph: ir.Graph, nodes: Collection[str]) -> set[str]:
    """The nodes named in ``nodes`` from whose outputs a graph output is reached without passing
    through another weighted layer (Conv, Gemm, MatMul)."""
    graph_outputs = {value.name for value in graph.outputs}
    found = set()
    for node in graph:
        if node.name not in nodes:
            continue
        frontier, seen = list(node.outputs), set()
        while frontier:
            value = frontier.pop()
            if value.name in graph_outputs:
                found.add(node.name)
                break
            for reader, _ in value.uses():
                if weight_axis(reader) is None and id(reader) not in seen:
                    seen.add(id(reader))
                    frontier.extend(reader.outputs)
    return found
