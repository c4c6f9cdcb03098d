"""Probe graphs for a search, built in the IR only (no ORT): a model whose extra outputs show
each candidate quantizer's effect at the layers reading a tensor, and stand-alone blocks of
those layers to time.

A probe clones every reader of a tensor once per candidate, the clone reading the quantized
tensor and the original the float one, so each layer's error is its own and not the sum of the
layers before it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions
from zsq_onnx.plan.calibrate import Range
from zsq_onnx.plan.targets import activation_uses
from zsq_onnx.quantizers.params import range_params
from zsq_onnx.quantizers.spec import QuantSpec

logger = logging.getLogger(__name__)

OutputPairs = dict[tuple[str, str], list[tuple[str, str]]]


def kind_ranges(ranges: Range, kind: str) -> Range:
    """Per-channel calibrated ranges as the ``kind`` quantizer uses them (scalars per tensor)."""
    low, high = ranges
    return (np.asarray(low.min(), np.float32), np.asarray(high.max(), np.float32)) if kind == "per_tensor" else (low, high)


def candidate_quantizer(graph: ir.Graph, source: ir.Value, kind: str, spec: QuantSpec, ranges: Range, prefix: str) -> ir.Node:
    """A quantizer of ``source`` as candidate ``kind`` (per_tensor, per_channel or granular)."""
    if kind == "granular":
        return add_granular_quantizer(graph, source, spec, prefix)
    static = QuantSpec(spec.bits, spec.symmetric, kind)
    scale, zero_point = range_params(*kind_ranges(ranges, kind), static)
    return add_static_quantizer(graph, source, scale, zero_point, static, 1, use_4bit_types=False, prefix=prefix)


def _clone(node: ir.Node, index: int, replacement: ir.Value, suffix: str) -> ir.Value:
    inputs = list(node.inputs)
    inputs[index] = replacement
    clone = ir.Node(
        node.domain, node.op_type, inputs, attributes=list(node.attributes.values()), num_outputs=len(node.outputs), name=f"{node.name}{suffix}"
    )
    clone.outputs[0].name = f"{node.outputs[0].name}{suffix}"
    node.graph.insert_after(node, clone)
    return clone.outputs[0]


def probe_model(
    folded: ir.Model, specs: Mapping[str, QuantSpec], ranges: Mapping[str, Range], rules: Sequence[str], kinds: Sequence[str]
) -> tuple[ir.Model, OutputPairs]:
    """A copy of ``folded`` plus, per candidate kind, a clone of each reader of each tensor in
    ``specs`` reading the quantized tensor; returns it and {(tensor, kind): [(float output,
    clone output), ...]}."""
    model = folded.clone()
    ensure_quantizer_functions(model)
    graph = model.graph
    pairs: OutputPairs = {}
    quantized: dict[tuple[str, str], ir.Value] = {}
    for node, index in activation_uses(graph, rules):
        source = node.inputs[index]
        if source.name not in specs:
            continue
        for kind in kinds:
            key = (source.name, kind)
            if key not in quantized:
                quantizer = candidate_quantizer(graph, source, kind, specs[source.name], ranges[source.name], f"{source.name}.probe_{kind}")
                graph.insert_before(node, quantizer)
                quantized[key] = quantizer.outputs[0]
            probe = _clone(node, index, quantized[key], f".probe_{kind}_{index}")
            graph.outputs.extend([node.outputs[0], probe])
            pairs.setdefault(key, []).append((node.outputs[0].name, probe.name))
    graph.outputs[:] = list(dict.fromkeys(graph.outputs))
    return model, pairs


def reader_block(graph: ir.Graph, readers: Sequence[ir.Node], shapes: Mapping[str, tuple[int, ...]]) -> ir.Model:
    """A model of just ``readers``: their computed inputs become graph inputs (of the shapes in
    ``shapes``), initializers are shared, and every output is quantized per tensor as the next
    layer's quantizer would be (so integer targets can fuse the block as in the full graph)."""
    values: dict[str, ir.Value] = {}
    block = ir.Graph([], [], nodes=[], name="block", opset_imports=dict(graph.opset_imports))

    def mapped(value: ir.Value | None) -> ir.Value | None:
        if value is None:
            return None
        if value.name not in values:
            if value.const_value is not None:
                copy = ir.Value(name=value.name, shape=value.shape, type=value.type, const_value=value.const_value)
                block.register_initializer(copy)
            else:
                copy = ir.Value(name=value.name, shape=ir.Shape(list(shapes[value.name])), type=ir.TensorType(ir.DataType.FLOAT))
                block.inputs.append(copy)
            values[value.name] = copy
        return values[value.name]

    for reader in readers:
        copy = ir.Node(reader.domain, reader.op_type, [mapped(v) for v in reader.inputs], attributes=list(reader.attributes.values()), num_outputs=1, name=reader.name)
        copy.outputs[0].name = reader.outputs[0].name
        copy.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        copy.outputs[0].shape = ir.Shape(list(shapes[reader.outputs[0].name]))
        block.append(copy)
        out = QuantSpec(8, False, "per_tensor")
        scale, zero_point = range_params(np.float32(-1), np.float32(1), out)
        quantizer = add_static_quantizer(block, copy.outputs[0], scale, zero_point, out, 1, use_4bit_types=False)
        block.append(quantizer)
        block.outputs.append(quantizer.outputs[0])
    model = ir.Model(block, ir_version=10)
    ensure_quantizer_functions(model)
    return model


def readers_of(graph: ir.Graph, tensor: str, rules: Sequence[str]) -> list[ir.Node]:
    """The nodes that read ``tensor`` where ``rules`` quantize it, in graph order, once each."""
    return list(dict.fromkeys(node for node, index in activation_uses(graph, rules) if node.inputs[index].name == tensor))
