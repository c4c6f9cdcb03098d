"""Turn static per-tensor activation quantizers into ASQ adaptive ones before fine-tuning."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions, new_initializer
from zsq_onnx.quantizers.adaptive import ADAPTIVE
from zsq_onnx.quantizers.registry import Role, input_for, integer_range, is_calibrated_static


class AdaptiveActivationsPass(ir.passes.InPlacePass):
    """Each static per-tensor quantizer of a rank-4 computed activation becomes an
    AdaptiveQuantize with the same scale and zero point (held in an 8-bit container, since the
    per-sample step needs Clip) and an adapter GAP -> Gemm(C -> C/4) -> Relu -> Gemm(-> 1) -> Relu
    whose last layer starts at weight 0, bias 1: beta = 1, the static quantizer, until trained.
    ``seed`` draws the first adapter layer (normal, std 1/sqrt(C))."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        rng = np.random.default_rng(self.seed)
        modified = False
        for node in list(graph):
            if not is_calibrated_static(node):
                continue
            source, scale, zero_point = (input_for(node, role) for role in (Role.SOURCE, Role.SCALE, Role.ZERO_POINT))
            if source.const_value is not None or source.is_graph_input() or scale.const_value.size != 1:
                continue
            if source.shape is None or len(source.shape) != 4 or not isinstance(source.shape[1], int):
                continue
            ensure_quantizer_functions(model)
            channels = source.shape[1]
            hidden = max(channels // 4, 1)
            qmin, qmax = integer_range(node)
            prefix = node.outputs[0].name.removesuffix("_out")
            container = ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8
            inputs = {
                "x": source,
                "scale": scale,
                "zero_point": new_initializer(graph, f"{prefix}_adaptive_zero_point", np.asarray(zero_point.const_value.numpy()).astype(np.int64), container),
                "qmin": new_initializer(graph, f"{prefix}_adaptive_qmin", np.array(qmin), container),
                "qmax": new_initializer(graph, f"{prefix}_adaptive_qmax", np.array(qmax), container),
                "down_weight": new_initializer(graph, f"{prefix}_adapter_down_weight", (rng.standard_normal((hidden, channels)) / np.sqrt(channels)).astype(np.float32)),
                "down_bias": new_initializer(graph, f"{prefix}_adapter_down_bias", np.zeros(hidden, np.float32)),
                "up_weight": new_initializer(graph, f"{prefix}_adapter_up_weight", np.zeros((1, hidden), np.float32)),
                "up_bias": new_initializer(graph, f"{prefix}_adapter_up_bias", np.ones(1, np.float32)),
            }
            adaptive = ADAPTIVE.make_node(inputs, name=f"{node.name}/adaptive")
            adaptive.outputs[0].name = f"{prefix}_adaptive_out"
            adaptive.outputs[0].shape, adaptive.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
            graph.insert_after(node, adaptive)
            node.outputs[0].replace_all_uses_with(adaptive.outputs[0], replace_graph_outputs=True)
            graph.remove(node, safe=True)
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
