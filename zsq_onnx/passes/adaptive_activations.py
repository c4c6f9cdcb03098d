"""Turn static per-tensor activation quantizers into ASQ adaptive ones before fine-tuning."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from zsq_onnx import quantizers
from zsq_onnx.passes.quantizer_nodes import ensure_quantizer_functions, new_initializer


def _levels(node: ir.Node) -> tuple[int, int]:
    """The (qmin, qmax) a static quantizer node uses."""
    if node.op_type == "StaticQuantizeClip":
        return int(node.inputs[3].const_value.numpy()), int(node.inputs[4].const_value.numpy())
    return quantizers.INTEGER_RANGES[int(node.inputs[2].const_value.dtype)]


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
            if node.domain != quantizers.DOMAIN or node.op_type not in quantizers.STATIC_KINDS:
                continue
            source, scale, zero_point = node.inputs[:3]
            if source.const_value is not None or source.is_graph_input() or scale.const_value.size != 1:
                continue
            if source.shape is None or len(source.shape) != 4 or not isinstance(source.shape[1], int):
                continue
            ensure_quantizer_functions(model)
            channels = source.shape[1]
            hidden = max(channels // 4, 1)
            qmin, qmax = _levels(node)
            prefix = node.outputs[0].name.removesuffix("_out")
            container = ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8
            inputs = [
                source,
                scale,
                new_initializer(graph, f"{prefix}_adaptive_zero_point", np.asarray(zero_point.const_value.numpy()).astype(np.int64), container),
                new_initializer(graph, f"{prefix}_adaptive_qmin", np.array(qmin), container),
                new_initializer(graph, f"{prefix}_adaptive_qmax", np.array(qmax), container),
                new_initializer(graph, f"{prefix}_adapter_down_weight", (rng.standard_normal((hidden, channels)) / np.sqrt(channels)).astype(np.float32)),
                new_initializer(graph, f"{prefix}_adapter_down_bias", np.zeros(hidden, np.float32)),
                new_initializer(graph, f"{prefix}_adapter_up_weight", np.zeros((1, hidden), np.float32)),
                new_initializer(graph, f"{prefix}_adapter_up_bias", np.ones(1, np.float32)),
            ]
            adaptive = ir.Node(quantizers.DOMAIN, "AdaptiveQuantize", inputs, num_outputs=1, name=f"{node.name}/adaptive")
            adaptive.outputs[0].name = f"{prefix}_adaptive_out"
            adaptive.outputs[0].shape, adaptive.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
            graph.insert_after(node, adaptive)
            node.outputs[0].replace_all_uses_with(adaptive.outputs[0], replace_graph_outputs=True)
            graph.remove(node, safe=True)
            modified = True
        if modified:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)
