"""Insert a zsq weight quantizer on the weight of every Conv/Gemm/MatMul: static (uniform) or a
lookup table, as its spec's levels say."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from zsq_onnx.errors import BadInputError
from zsq_onnx.passes.quantizer_nodes import add_lut_quantizer, add_static_quantizer, ensure_quantizer_functions
from zsq_onnx.plan.targets import as_weight_target, weight_axis
from zsq_onnx.quantizers.lut import initial_alpha
from zsq_onnx.quantizers.params import least_error_params, range_params
from zsq_onnx.quantizers.spec import QuantSpec

logger = logging.getLogger(__name__)


def weight_params(weight: np.ndarray, spec: QuantSpec, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (along ``axis``) or per-tensor parameters of a weight: from its min/max, or
    from the clipping of it with the least rounding error when ``spec.clips_weights``."""
    if spec.clips_weights:
        rows = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1) if spec.granularity == "per_channel" else weight.reshape(1, -1)
        scale, zero_point = least_error_params(rows.astype(np.float32), spec)
        return (scale, zero_point) if spec.granularity == "per_channel" else (scale.reshape(()), zero_point.reshape(()))
    if spec.granularity == "per_channel":
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        return range_params(weight.min(axis=reduce), weight.max(axis=reduce), spec)
    return range_params(np.array(weight.min()), np.array(weight.max()), spec)


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Quantize each weighted node's weight with the spec ``specs[node name]`` (nodes not named
    there stay float); uniform scales come from :func:`weight_params`, lookup-table alphas from a
    percentile of |w|."""

    def __init__(self, specs: Mapping[str, QuantSpec], use_4bit_types: bool = True) -> None:
        super().__init__()
        self.specs = specs
        self.use_4bit_types = use_4bit_types

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        done: dict[str, ir.Value] = {}
        for node in list(graph):
            target = as_weight_target(node)
            if target is None:
                if weight_axis(node) is not None:
                    logger.debug("quantize weights skips %s: its weight is not a constant float tensor of rank 2+, or its data input is constant", node.name)
                continue
            if target.node not in self.specs:
                logger.debug("quantize weights skips %s: the plan keeps its weight float", node.name)
                continue
            ensure_quantizer_functions(model)
            weight = node.inputs[1]
            if weight.name not in done:
                values = weight.const_value.numpy()
                if not np.isfinite(values).all():
                    raise BadInputError(f"weight {weight.name!r} of node {node.name!r} contains NaN or inf")
                spec = self.specs[target.node]
                if spec.lookup_table:
                    alpha = initial_alpha(values, target.weight_axis if spec.granularity == "per_channel" else None)
                    quantizer = add_lut_quantizer(graph, weight, alpha, spec)
                else:
                    scale, zero_point = weight_params(values, spec, target.weight_axis)
                    quantizer = add_static_quantizer(graph, weight, scale, zero_point, spec, target.weight_axis, self.use_4bit_types)
                graph.insert_before(node, quantizer)
                done[weight.name] = quantizer.outputs[0]
            node.replace_input_with(1, done[weight.name])
        logger.debug("quantize weights: %d quantizers inserted", len(done))
        return ir.passes.PassResult(model, modified=bool(done))
