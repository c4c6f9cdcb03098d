"""Building zsq quantizer nodes and their initializers in an onnx_ir graph."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx.quantizers import registry
from zsq_onnx.quantizers.common import DOMAIN, VERSION, container_type
from zsq_onnx.quantizers.granular import GRANULAR
from zsq_onnx.quantizers.lut import LUT, level_table
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.quantizers.static import STATIC_CLIP, kind_for_range


def ensure_quantizer_functions(model: ir.Model) -> None:
    """Add the function definitions of every registered zsq quantizer kind and the opset import
    to ``model`` (idempotent)."""
    model.opset_imports.setdefault(DOMAIN, VERSION)
    for name, proto in registry.function_protos().items():
        if (DOMAIN, name, "") not in model.functions:
            function = ir.serde.deserialize_function(proto)
            model.functions[function.identifier()] = function


def new_initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: ir.DataType | None = None) -> ir.Value:
    """Register ``array`` (cast to ``dtype`` when given) as an initializer of ``graph`` named ``name``."""
    if dtype is not None:
        array = np.asarray(array).astype(dtype.numpy())
    tensor = ir.tensor(array, dtype=dtype, name=name)
    value = ir.Value(name=name, const_value=tensor, shape=tensor.shape, type=ir.TensorType(tensor.dtype))
    graph.register_initializer(value)
    return value


def add_static_quantizer(
    graph: ir.Graph, source: ir.Value, scale: np.ndarray, zero_point: np.ndarray, spec: QuantSpec, axis: int, use_4bit_types: bool = True,
    prefix: str | None = None,
) -> ir.Node:
    """Create (not yet inserted) a zsq static quantizer node reading ``source``, with its initializers.

    4-bit quantizers use int4/uint4 unless ``use_4bit_types`` is off; other widths below 8 use an
    8-bit container and a Clip (StaticQuantizeClip). Its values are named ``prefix``_scale etc.
    (default ``<source>.zsq``)."""
    container = ir.DataType(container_type(spec.bits if use_4bit_types else 8, spec.signed))
    prefix = prefix or f"{source.name}.zsq"
    kind = kind_for_range(spec.qmin, spec.qmax, int(container))
    inputs = {
        "x": source,
        "scale": new_initializer(graph, f"{prefix}_scale", scale.astype(np.float32)),
        "zero_point": new_initializer(graph, f"{prefix}_zero_point", zero_point, container),
    }
    if kind is STATIC_CLIP:
        inputs["qmin"] = new_initializer(graph, f"{prefix}_qmin", np.array(spec.qmin), container)
        inputs["qmax"] = new_initializer(graph, f"{prefix}_qmax", np.array(spec.qmax), container)
    output = ir.Value(name=f"{prefix}_out", shape=source.shape, type=source.type)
    return kind.make_node(inputs, attributes=[ir.AttrInt64("axis", axis)], outputs=[output], name=f"zsq/{prefix}")


def add_granular_quantizer(graph: ir.Graph, source: ir.Value, spec: QuantSpec, prefix: str | None = None) -> ir.Node:
    """Create (not yet inserted) a zsq GranQ quantizer node reading ``source``: its only
    initializer is the level count 2^bits - 1; ranges are computed in the graph per sample and channel."""
    prefix = prefix or f"{source.name}.zsq"
    levels = new_initializer(graph, f"{prefix}_levels", np.array((1 << spec.bits) - 1, np.float32))
    output = ir.Value(name=f"{prefix}_out", shape=source.shape, type=source.type)
    return GRANULAR.make_node({"x": source, "levels": levels}, outputs=[output], name=f"zsq/{prefix}")


def add_lut_quantizer(graph: ir.Graph, source: ir.Value, alpha: np.ndarray, spec: QuantSpec, prefix: str | None = None) -> ir.Node:
    """Create (not yet inserted) a zsq lookup-table quantizer node reading the weight ``source``:
    the table of ``spec.levels`` at ``spec.bits`` and ``alpha`` (shaped to broadcast against the
    weight, see :func:`~zsq_onnx.quantizers.lut.initial_alpha`)."""
    prefix = prefix or f"{source.name}.zsq"
    inputs = {
        "w": source,
        "alpha": new_initializer(graph, f"{prefix}_alpha", alpha.astype(np.float32)),
        "table": new_initializer(graph, f"{prefix}_table", level_table(spec.levels, spec.bits)),
    }
    output = ir.Value(name=f"{prefix}_out", shape=source.shape, type=source.type)
    return LUT.make_node(inputs, outputs=[output], name=f"zsq/{prefix}")
