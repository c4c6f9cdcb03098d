"""The blocks that block-wise reconstruction (BRECQ/QDrop, :mod:`zsq_onnx.reconstruct.block`)
fits one at a time: segments of the quantized graph between single-tensor cuts.

A cut is a tensor through which every path from the graph's input to its output passes: in
topological order, the one value still live (computed and read later) after some node. Values
computed from constants alone (initializers, weight quantizers, Constant nodes) are not live:
they hold weights, not data. A residual block or an MBConv with its skip has no cut inside it,
so it becomes one block; a chain of plain layers is cut after each layer's output (its
activation and quantizer included), and each block holds at least ``min_layers`` weighted
layers (Conv/Gemm/MatMul of a constant weight), the nodes up to the cut before the next weighted
layer included. Numpy and onnx_ir only."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import onnx_ir as ir

from zsq_onnx.plan.targets import weight_axis
from zsq_onnx.quantizers.registry import Role, input_for, is_calibrated_static, kind_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """One block: the tensor it reads (``input``) and the one it produces (``output``), names in
    the quantized graph; its nodes in graph order; among them its weighted layers (``layers``)
    and the quantizers of activations inside it (``activation_quantizers``; the one producing
    ``input`` belongs to the block before, the one producing ``output`` to this one), the
    static ones (calibrated scales, which block mode learns) in ``static_quantizers``."""

    name: str
    input: str
    output: str
    nodes: tuple[str, ...]
    layers: tuple[str, ...]
    activation_quantizers: tuple[str, ...]
    static_quantizers: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "input": self.input, "output": self.output, "layers": list(self.layers),
                "activation_quantizers": list(self.activation_quantizers)}


def constant_values(graph: ir.Graph) -> set[str]:
    """Names of the values computed from constants alone: initializers and the outputs of nodes
    all of whose inputs are such values (weight quantizers, Constant and shape arithmetic on them)."""
    constant = {name for name, value in graph.initializers.items() if value.const_value is not None}
    constant.update(value.name for value in graph.inputs if value.const_value is not None)
    for node in graph:
        if all(value is None or value.name in constant for value in node.inputs):
            constant.update(value.name for value in node.outputs)
    return constant


def cuts(graph: ir.Graph) -> list[tuple[int, str]]:
    """(position, name) of every cut in graph order: the value that is the only live one after
    the node at ``position`` (-1: the graph's input, before any node). Empty when the graph has
    more than one data input."""
    constant = constant_values(graph)
    inputs = [value.name for value in graph.inputs if value.name not in constant]
    if len(inputs) != 1:
        return []
    nodes = list(graph)
    outputs = {value.name for value in graph.outputs}
    last_use: dict[str, float] = {}
    for position, node in enumerate(nodes):
        for value in node.inputs:
            if value is not None and value.name not in constant:
                last_use[value.name] = position
    for name in outputs:
        last_use[name] = math.inf
    live = {inputs[0]} if last_use.get(inputs[0], -1) > -1 else set()
    found = [(-1, inputs[0])] if len(live) == 1 else []
    for position, node in enumerate(nodes):
        live.update(value.name for value in node.outputs if value.name not in constant and last_use.get(value.name, -1) > position)
        live = {name for name in live if last_use[name] > position}
        if len(live) == 1:
            found.append((position, next(iter(live))))
    return found


def weighted(node: ir.Node, constant: set[str]) -> bool:
    """Whether ``node`` is a layer with a constant (possibly quantized) weight."""
    return weight_axis(node) is not None and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name in constant \
        and node.inputs[0] is not None and node.inputs[0].name not in constant


def partition(model: ir.Model, min_layers: int = 1) -> list[Block]:
    """The blocks of ``model`` (see the module docstring), in graph order; none when the graph
    has no cut (several data inputs)."""
    graph = model.graph
    constant = constant_values(graph)
    found = cuts(graph)
    nodes = list(graph)
    layer_at = [weighted(node, constant) for node in nodes]
    # per segment between consecutive cuts, its weighted layers
    layers_in = [sum(layer_at[found[i][0] + 1 : found[i + 1][0] + 1]) for i in range(len(found) - 1)]
    groups: list[list[int]] = []  # each: [first cut, last cut] (indices into found)
    first, count = 0, 0
    for index, layers in enumerate(layers_in):
        count += layers
        if count >= min_layers and index + 1 < len(layers_in) and layers_in[index + 1]:
            groups.append([first, index + 1])
            first, count = index + 1, 0
    if first < len(layers_in):
        if groups and not count:
            groups[-1][1] = len(layers_in)  # only layer-free nodes follow: they join the last block
        else:
            groups.append([first, len(layers_in)])
    blocks = []
    for first, last in groups:
        members = nodes[found[first][0] + 1 : found[last][0] + 1]
        layers = tuple(node.name for node in members if weighted(node, constant))
        if not layers:
            continue
        quantizers = [node for node in members if kind_of(node) is not None and _source_name(node) not in constant]
        name = layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]}"
        blocks.append(Block(name, found[first][1], found[last][1], tuple(node.name for node in members), layers,
                            tuple(node.name for node in quantizers), tuple(node.name for node in quantizers if is_calibrated_static(node))))
    logger.debug("reconstruct: %d blocks: %s", len(blocks), ", ".join(f"{b.name} ({len(b.layers)} layers)" for b in blocks))
    return blocks


def _source_name(node: ir.Node) -> str | None:
    """The name of the tensor quantizer ``node`` quantizes (None for a kind without one)."""
    positions = kind_of(node).positions(Role.SOURCE)
    value = node.inputs[positions[0]] if len(positions) == 1 and positions[0] < len(node.inputs) else None
    return value.name if value is not None else None


def float_name(model: ir.Model, name: str) -> str:
    """The value of the float graph that ``name`` of the quantized ``model`` stands for: a
    quantizer's output stands for its source (quantizers inserted keep every other name)."""
    values = {value.name: value for node in model.graph for value in node.outputs}
    value = values.get(name)
    while value is not None and value.producer() is not None and kind_of(value.producer()) is not None:
        value = input_for(value.producer(), Role.SOURCE)
    return value.name if value is not None else name
