"""Insert zsq static quantizers on the weights and activation inputs of Conv/Gemm/MatMul."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from zsq_onnx import quantizers
from zsq_onnx.errors import BadInputError
from zsq_onnx.passes.quant_targets import as_target
from zsq_onnx.quant_params import range_params
from zsq_onnx.recipe import QuantSpec

Range = tuple[np.ndarray, np.ndarray]


def ensure_quantizer_functions(model: ir.Model) -> None:
    """Add the zsq function definitions and opset import to ``model`` (idempotent)."""
    model.opset_imports.setdefault(quantizers.DOMAIN, quantizers.VERSION)
    for proto in quantizers.function_protos().values():
        function = ir.serde.deserialize_function(proto)
        model.functions.setdefault(function.identifier(), function)


def _initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: ir.DataType | None = None) -> ir.Value:
    if dtype is not None:
        array = np.asarray(array).astype(dtype.numpy())
    tensor = ir.tensor(array, dtype=dtype, name=name)
    value = ir.Value(name=name, const_value=tensor, shape=tensor.shape, type=ir.TensorType(tensor.dtype))
    graph.register_initializer(value)
    return value


def add_static_quantizer(graph: ir.Graph, source: ir.Value, scale: np.ndarray, zero_point: np.ndarray, spec: QuantSpec, axis: int) -> ir.Node:
    """Create (not yet inserted) a zsq static quantizer node reading ``source``, with its initializers."""
    container = ir.DataType(quantizers.container_type(spec.bits, spec.signed))
    prefix = f"{source.name}.zsq"
    inputs = [
        source,
        _initializer(graph, f"{prefix}_scale", scale.astype(np.float32)),
        _initializer(graph, f"{prefix}_zero_point", zero_point, container),
    ]
    low, high = quantizers.INTEGER_RANGES[int(container)]
    if (spec.qmin, spec.qmax) == (low, high):
        op_type = "StaticQuantize"
    else:
        op_type = "StaticQuantizeClip"
        inputs += [_initializer(graph, f"{prefix}_qmin", np.array(spec.qmin), container), _initializer(graph, f"{prefix}_qmax", np.array(spec.qmax), container)]
    output = ir.Value(name=f"{prefix}_out", shape=source.shape, type=source.type)
    return ir.Node(quantizers.DOMAIN, op_type, inputs, attributes=[ir.AttrInt64("axis", axis)], outputs=[output], name=f"zsq/{source.name}")


def weight_params(weight: np.ndarray, spec: QuantSpec, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (along ``axis``) or per-tensor parameters of a weight from its min/max."""
    if spec.granularity == "per_channel":
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        return range_params(weight.min(axis=reduce), weight.max(axis=reduce), spec)
    return range_params(np.array(weight.min()), np.array(weight.max()), spec)


class InsertQuantizersPass(ir.passes.InPlacePass):
    """Quantize each Conv/Gemm/MatMul: its weight (from the weight's values) and its activation
    input (from calibrated ``activation_ranges``: per-tensor scalars or per-channel vectors)."""

    def __init__(self, weights: QuantSpec, activations: QuantSpec, activation_ranges: Mapping[str, Range]) -> None:
        super().__init__()
        self.weights = weights
        self.activations = activations
        self.activation_ranges = activation_ranges

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        targets = [(node, target) for node in list(graph) if (target := as_target(node)) is not None]
        if not targets:
            return ir.passes.PassResult(model, modified=False)
        ensure_quantizer_functions(model)
        quantized: dict[str, ir.Value] = {}
        for node, target in targets:
            self._quantize_weight(graph, node, target.weight_axis, quantized)
            self._quantize_activation(graph, node, quantized)
        return ir.passes.PassResult(model, modified=True)

    def _quantize_weight(self, graph: ir.Graph, node: ir.Node, axis: int, quantized: dict[str, ir.Value]) -> None:
        weight = node.inputs[1]
        if weight.name not in quantized:
            values = weight.const_value.numpy()
            if not np.isfinite(values).all():
                raise BadInputError(f"weight {weight.name!r} of node {node.name!r} contains NaN or inf")
            scale, zero_point = weight_params(values, self.weights, axis)
            quantizer = add_static_quantizer(graph, weight, scale, zero_point, self.weights, axis)
            graph.insert_before(node, quantizer)
            quantized[weight.name] = quantizer.outputs[0]
        node.replace_input_with(1, quantized[weight.name])

    def _quantize_activation(self, graph: ir.Graph, node: ir.Node, quantized: dict[str, ir.Value]) -> None:
        activation = node.inputs[0]
        if activation.name not in quantized:
            if activation.name not in self.activation_ranges:
                raise BadInputError(f"no calibrated range for activation {activation.name!r} of node {node.name!r}")
            low, high = (np.asarray(v, np.float32) for v in self.activation_ranges[activation.name])
            scale, zero_point = range_params(low, high, self.activations)
            quantizer = add_static_quantizer(graph, activation, scale, zero_point, self.activations, axis=1)
            graph.insert_before(node, quantizer)
            quantized[activation.name] = quantizer.outputs[0]
        node.replace_input_with(0, quantized[activation.name])
