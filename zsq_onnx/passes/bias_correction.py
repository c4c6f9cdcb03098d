"""Bias correction (DFQ, Nagel et al. 2019): quantized weights W_q = W + eps move each output
channel's mean by eps . E[x]; subtract that shift from the Conv/Gemm bias (adding a bias where
the node has none), so the quantized layer's mean output is the float layer's.

The pass takes the input means as data and reads W_q from the node's zsq weight quantizer
(static or lookup table), computed as the graph computes it: it runs
after QuantizeWeightsPass and before QuantizeBiasPass rounds the corrected bias to int32 (the
means are measured by :class:`zsq_onnx.plan.empirical_bias.EmpiricalBiasCorrectionPass`).

Means are per input channel (the usual approximation for Conv: the channel's mean stands for
every kernel tap), or for Conv the mean over samples of the whole input, [C, *spatial]: the pass
then averages, per channel and kernel tap, exactly the positions that tap reads over the output
(zeros where it reads padding), so the shift is exact at the borders too. Grouped and depthwise
convs pair output channel o with its group's inputs. Gemm (transA 0): alpha * W . m, applied to C
as shift / beta.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import new_initializer
from zsq_onnx.quantizers.registry import Role, constant_output, input_for

logger = logging.getLogger(__name__)


def quantized_weight(quantizer: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, W_q) of a zsq quantizer of a constant weight, W_q as the graph computes it (see
    :func:`~zsq_onnx.quantizers.registry.constant_output`); None for anything else."""
    quantized = constant_output(quantizer)
    if quantized is None:
        return None
    return input_for(quantizer, Role.SOURCE).const_value.numpy(), quantized


def _tap_slice(size: int, tap: int, stride: int, dilation: int, pad: int, outputs: int) -> slice:
    """The input positions along one axis that kernel tap ``tap`` reads over all outputs (those
    falling in the padding left out)."""
    offset = tap * dilation - pad
    first = max(0, -(offset // stride))
    last = min(outputs - 1, (size - 1 - offset) // stride)
    if last < first:
        return slice(0, 0)
    return slice(first * stride + offset, last * stride + offset + 1, stride)


def _conv_padding(node: ir.Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """Padding before and after each spatial axis, as ONNX Conv defines it (auto_pad included)."""
    mode = node.attributes.get_string("auto_pad", "NOTSET")
    rank = len(spatial)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0) for n, s, k, d in zip(spatial, strides, kernel, dilations)]
        small, large = [t // 2 for t in totals], [t - t // 2 for t in totals]
        return (small, large) if mode == "SAME_UPPER" else (large, small)
    pads = list(node.attributes.get_ints("pads", [0] * 2 * rank)) if mode == "NOTSET" else [0] * 2 * rank
    return pads[:rank], pads[rank:]


def tap_means(node: ir.Node, mean_map: np.ndarray, kernel: Sequence[int]) -> np.ndarray:
    """[C, *kernel]: per input channel and kernel tap of Conv ``node``, the mean of what the tap
    reads over all output positions, from the input's mean over samples ``mean_map`` [C, *spatial]
    (zero padding counted as zeros)."""
    spatial = mean_map.shape[1:]
    rank = len(spatial)
    strides, dilations = list(node.attributes.get_ints("strides", [1] * rank)), list(node.attributes.get_ints("dilations", [1] * rank))
    begin, end = _conv_padding(node, spatial, kernel, strides, dilations)
    outputs = [(n + b + e - d * (k - 1) - 1) // s + 1 for n, b, e, d, k, s in zip(spatial, begin, end, dilations, kernel, strides)]
    result = np.zeros((mean_map.shape[0], *kernel))
    axes = tuple(range(1, rank + 1))
    for tap in itertools.product(*(range(k) for k in kernel)):
        region = tuple(_tap_slice(n, t, s, d, b, o) for n, t, s, d, b, o in zip(spatial, tap, strides, dilations, begin, outputs))
        result[(slice(None), *tap)] = mean_map[(slice(None), *region)].sum(axis=axes) / np.prod(outputs)
    return result


def conv_response(weight: np.ndarray, taps: np.ndarray, group: int = 1) -> np.ndarray:
    """Output of a bias-free Conv of weight [O, C/group, *kernel] whose taps read on average
    ``taps`` [C, *kernel] (or [C], the same at every tap)."""
    outputs, per_group = weight.shape[0], weight.shape[1]
    if taps.shape[0] != per_group * group or taps.shape[1:] not in ((), weight.shape[2:]):
        raise ValueError(f"conv weight {weight.shape} with group {group} needs input means of shape ({per_group * group},) or "
                         f"({per_group * group}, {', '.join(map(str, weight.shape[2:]))}), got {taps.shape}")
    taps = np.broadcast_to(taps.reshape(taps.shape[0], -1), (taps.shape[0], int(np.prod(weight.shape[2:]))))
    return np.einsum("goik,gik->go", weight.reshape(group, outputs // group, per_group, -1), taps.reshape(group, per_group, -1)).reshape(outputs)


class BiasCorrectionPass(ir.passes.InPlacePass):
    """Correct the bias of every Conv/Gemm named in ``means`` whose weight is a zsq weight
    quantizer of a constant (static or lookup table): ``means`` are its input's means in the float
    graph. The error is measured against ``float_weights[node]`` where given (the weight before
    reconstruction rewrote the quantizer's source, see :mod:`zsq_onnx.reconstruct`), else against
    the quantizer's source. After a call, ``shifts`` holds the largest |shift| per corrected node."""

    def __init__(self, means: Mapping[str, np.ndarray], float_weights: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.means = means
        self.float_weights = float_weights or {}
        self.shifts: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.shifts = {}
        for node in list(model.graph):
            if node.name not in self.means:
                continue
            shift = self._shift(node)
            if shift is not None and self._subtract(model.graph, node, shift):
                self.shifts[node.name] = float(np.abs(shift).max(initial=0.0))
        return ir.passes.PassResult(model, modified=bool(self.shifts))

    def _shift(self, node: ir.Node) -> np.ndarray | None:
        """The bias change of ``node`` (to subtract from its bias), or None when it cannot be corrected."""
        producer = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
        weights = quantized_weight(producer) if producer is not None else None
        if weights is None or node.domain not in ("", "ai.onnx"):
            logger.debug("bias correction skips %s: its weight is not a static quantizer of a constant", node.name)
            return None
        weight, quantized = (w.astype(np.float64) for w in weights)
        if node.name in self.float_weights:
            weight = np.asarray(self.float_weights[node.name], np.float64)
        means = np.asarray(self.means[node.name], np.float64)
        if node.op_type == "Conv":
            if means.ndim > 1:
                means = tap_means(node, means, weight.shape[2:])
            return conv_response(quantized - weight, means, node.attributes.get_int("group", 1))
        if node.op_type == "Gemm" and not node.attributes.get_int("transA", 0):
            beta = node.attributes.get_float("beta", 1.0)
            if beta == 0:
                logger.debug("bias correction skips %s: Gemm with beta 0 ignores C", node.name)
                return None
            if not node.attributes.get_int("transB", 0):
                weight, quantized = weight.T, quantized.T
            return node.attributes.get_float("alpha", 1.0) * ((quantized - weight) @ means) / beta
        logger.debug("bias correction skips %s: %s with these attributes has no per-output bias", node.name, node.op_type)
        return None

    def _subtract(self, graph: ir.Graph, node: ir.Node, shift: np.ndarray) -> bool:
        """Replace ``node``'s bias by bias - shift (zero bias when absent); False when the bias is
        computed or does not broadcast as one value per output channel."""
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is None:
            corrected = (-shift).astype(np.float32)
            name = _fresh_name(graph, f"{node.inputs[1].producer().inputs[0].name.removesuffix('.weight')}.bias")
        elif bias.const_value is None:
            logger.debug("bias correction skips %s: its bias %s is computed", node.name, bias.name)
            return False
        else:
            values = bias.const_value.numpy()
            if values.size not in (1, shift.size) or values.ndim > 1:
                logger.debug("bias correction skips %s: bias %s of shape %s is not one value per output", node.name, bias.name, values.shape)
                return False
            corrected = (np.broadcast_to(values.reshape(-1), shift.shape) - shift).astype(np.float32)
            if len(bias.uses()) == 1 and values.shape == shift.shape:
                bias.const_value = ir.tensor(corrected, name=bias.name)
                return True
            name = _fresh_name(graph, f"{bias.name}.corrected")
        value = new_initializer(graph, name, corrected)
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, value)
        return True


def _fresh_name(graph: ir.Graph, base: str) -> str:
    """``base``, or ``base`` with a numeric suffix when an initializer has that name already."""
    name, index = base, 1
    while name in graph.initializers:
        name, index = f"{base}.{index}", index + 1
    return name
