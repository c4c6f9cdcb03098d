"""ZeroQ sensitivity, measured in the torch executor: KL(FP32 output || output with only one
layer's weight, or one layer's input, quantized), averaged over the synthetic samples.

One :class:`~zsq_onnx.executors.torch_graph.TorchGraph` serves every candidate: the FP32 log
probabilities are computed once per batch, then a weight candidate swaps the layer's weight
parameter for its fake-quantized values (the scale and zero point the pipeline's
QuantizeWeightsPass computes, by :func:`~zsq_onnx.passes.quantize_weights.weight_params`), runs
and restores it. Input candidates need a quantizer in the graph: :func:`input_probe` adds, for
each searched layer, a static quantizer of its input (per tensor, min/max range) and a gate
``x * (1 - g) + q * g`` that only that layer reads, so setting one gate to 1 and the quantizer's
scale, zero point and levels to a candidate's measures it, all in the same graph.

Torch is imported inside the functions, so this module imports without torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantize_weights import weight_params
from zsq_onnx.passes.quantizer_nodes import add_static_quantizer, ensure_quantizer_functions, new_initializer
from zsq_onnx.plan.calibrate import Range
from zsq_onnx.plan.targets import WeightTarget
from zsq_onnx.quantizers.params import range_params
from zsq_onnx.quantizers.spec import QuantSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputGate:
    """Initializer names of one layer's input quantizer and gate in a probe model."""

    node: str
    tensor: str
    scale: str
    zero_point: str
    qmin: str
    qmax: str
    gate: str
    keep: str


def input_probe(folded: ir.Model, targets: Sequence[WeightTarget], spec: QuantSpec) -> tuple[ir.Model, dict[str, InputGate]]:
    """A copy of ``folded`` where each target's node reads its input through its own quantizer
    (per tensor, 8-bit container with Clip, so any width up to 8 bits fits by changing values)
    and gate, both closed: the copy computes exactly what ``folded`` does until a gate opens."""
    probe = folded.clone()
    graph = probe.graph
    ensure_quantizer_functions(probe)
    nodes = {node.name: node for node in graph}
    gates = {}
    narrow = QuantSpec(2, spec.symmetric, "per_tensor")  # below 8 bits: the clip kind, whose levels are values
    for index, target in enumerate(targets):
        node = nodes[target.node]
        source = node.inputs[0]
        prefix = f"zsq_mp/{index}"
        quantizer = add_static_quantizer(graph, source, np.ones((), np.float32), np.zeros((), np.int64), narrow, 1, use_4bit_types=False, prefix=prefix)
        gate = new_initializer(graph, f"{prefix}_gate", np.zeros((), np.float32))
        keep = new_initializer(graph, f"{prefix}_keep", np.ones((), np.float32))
        kept = ir.node("Mul", [source, keep], name=f"{prefix}/keep")
        passed = ir.node("Mul", [quantizer.outputs[0], gate], name=f"{prefix}/pass")
        mixed = ir.node("Add", [kept.outputs[0], passed.outputs[0]], name=f"{prefix}/mix")
        mixed.outputs[0].name = f"{prefix}_mixed"
        graph.insert_before(node, [quantizer, kept, passed, mixed])
        node.replace_input_with(0, mixed.outputs[0])
        names = [value.name for value in quantizer.inputs[1:]]
        gates[target.node] = InputGate(target.node, target.activation, *names, gate.name, keep.name)
    return probe, gates


def _logits(graph, batch):
    """The first output of a TorchGraph (the logits) for one input batch."""
    return graph.run({graph.input_names[0]: batch}, graph.output_names[:1])[graph.output_names[0]]


def _kl_sum(graph, batches: Sequence, reference: Sequence) -> float:
    """Summed over samples: KL(reference softmax || softmax of ``graph``'s logits), the
    fine-tuning KD loss at temperature 1."""
    from zsq_onnx.finetune.kd import kd_loss

    return sum(float(kd_loss(_logits(graph, batch), teacher, 1.0)) * len(batch) for batch, teacher in zip(batches, reference))


class Sensitivity:
    """KL divergences on ``batches`` of a TorchGraph of ``model`` (a BN-folded FP32 model, or its
    :func:`input_probe`) against its own FP32 output."""

    def __init__(self, model: ir.Model, batches: Sequence[np.ndarray]) -> None:
        import torch

        from zsq_onnx.executors.torch_graph import TorchGraph

        self.graph = TorchGraph(model).eval()
        self.batches = [torch.from_numpy(np.asarray(batch, np.float32)) for batch in batches]
        self.samples = sum(len(batch) for batch in self.batches)
        with torch.no_grad():
            self.reference = [torch.log_softmax(_logits(self.graph, batch), 1) for batch in self.batches]

    def measure(self) -> float:
        """Mean KL per sample of the graph as it is now against the FP32 reference."""
        import torch

        with torch.no_grad():
            return max(_kl_sum(self.graph, self.batches, self.reference) / self.samples, 0.0)

    @contextmanager
    def _swapped(self, name: str, value) -> Iterator[None]:
        """The float initializer ``name`` holds ``value`` inside the block, its own value after."""
        import torch

        parameter = self.graph.parameter(name)
        saved = parameter.detach().clone()
        with torch.no_grad():
            parameter.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                parameter.copy_(saved)

    def _channel_means(self, name: str):
        """Per-channel (axis 1) mean of the value ``name`` over every sample and position."""
        import torch

        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.batches:
                value = self.graph.run({self.graph.input_names[0]: batch}, [name])[name]
                total = total + value.transpose(0, 1).reshape(value.shape[1], -1).sum(1)
                count += value.numel() // value.shape[1]
        return total / count

    def weights(self, target: WeightTarget, specs: Sequence[QuantSpec], bias: str | None = None, output: str | None = None) -> list[float]:
        """KL with only ``target``'s weight quantized, for each spec (per channel along the
        target's weight axis or per tensor, as the spec says, scales from the weight's min/max).
        Given the node's float ``bias`` initializer and ``output`` value, the bias is first
        corrected as the pipeline's bias correction does: the quantized layer's mean output per
        channel, over the batches, is moved back to the float layer's."""
        import torch

        from zsq_onnx.quantizers.common import fake_quantize

        weight = self.graph.parameter(target.weight).detach().clone()
        values = weight.numpy()
        reference = self._channel_means(output) if bias is not None and output is not None else None
        result = []
        for spec in specs:
            scale, zero_point = weight_params(values, spec, target.weight_axis)
            quantized = fake_quantize(weight, torch.from_numpy(scale), torch.from_numpy(zero_point), spec.qmin, spec.qmax, target.weight_axis)
            with self._swapped(target.weight, quantized):
                if reference is None:
                    result.append(self.measure())
                    continue
                corrected = self.graph.parameter(bias).detach() - (self._channel_means(output) - reference)
                with self._swapped(bias, corrected):
                    result.append(self.measure())
        return result

    def inputs(self, gate: InputGate, specs: Sequence[QuantSpec], low_high: Range) -> list[float]:
        """KL with only one layer's input quantized (probe graph, see :func:`input_probe`), per
        tensor over ``low_high`` = (min, max), for each spec."""
        import torch

        buffers = {name: self.graph.constant(name) for name in (gate.zero_point, gate.qmin, gate.qmax)}
        saved = {name: buffer.clone() for name, buffer in buffers.items()}
        result = []
        try:
            with self._swapped(gate.gate, torch.ones(())), self._swapped(gate.keep, torch.zeros(())):
                for spec in specs:
                    scale, zero_point = range_params(*low_high, spec)
                    buffers[gate.zero_point].fill_(int(zero_point))
                    buffers[gate.qmin].fill_(spec.qmin)
                    buffers[gate.qmax].fill_(spec.qmax)
                    with self._swapped(gate.scale, torch.from_numpy(np.asarray(scale, np.float32))):
                        result.append(self.measure())
        finally:
            for name, buffer in buffers.items():
                buffer.copy_(saved[name])
        return result

    def output_elements(self, nodes: Mapping[str, str]) -> dict[str, int]:
        """Elements per sample of each node's output (``nodes``: node name -> output name), from
        one run on the first sample."""
        import torch

        with torch.no_grad():
            values = self.graph.run({self.graph.input_names[0]: self.batches[0][:1]}, list(dict.fromkeys(nodes.values())))
        return {node: int(np.prod(values[output].shape[1:])) for node, output in nodes.items()}

