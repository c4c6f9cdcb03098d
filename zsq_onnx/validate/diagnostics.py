"""Where accuracy is lost and what ORT makes of a model: per-layer SQNR, fusion counts,
layers left in float, and a cross-check of executors (ORT ALL vs BASIC vs onnx.reference)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import onnx.utils
import onnx_ir as ir
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

from zsq_onnx.executors.ort_graph import integer_kernels, optimized_graph, saturating_kernels
from zsq_onnx.executors.runtime import Execution, batch_size_for, make_session
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.validate.metrics import signal_and_noise

logger = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
OTHER_INTEGER_OPS = ("QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearMul", "QLinearConcat")
LAYER_OUTPUTS_PER_INPUT = 64  # all weighted layers' outputs of a CNN hold about this many times its input
FLOAT_WEIGHTED_OPS = ("Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "NchwcConv")


def layer_outputs(model: ir.Model) -> list[tuple[str, str]]:
    """(layer name, output tensor) of every weighted node in graph order; a Conv followed only by
    BatchNormalization reports the BN output, so BN and BN-folded graphs pair layer by layer.
    Layers are named after their weights (``layer1.0.conv1``)."""
    layers = []
    for node in model.graph:
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        output = node.outputs[0]
        users = output.consumers()
        if len(users) == 1 and users[0].op_type == "BatchNormalization":
            output = users[0].outputs[0]
        layers.append((_layer_name(node), output.name))
    return layers


def _layer_name(node: ir.Node) -> str:
    """A readable layer name: the node's weight name without quantizer or ``.weight`` suffixes."""
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return node.name or node.outputs[0].name
    return node.inputs[1].name.removesuffix(".zsq_out").removesuffix(".weight")


def _run(model: ir.Model, names: list[str], inputs: np.ndarray, level: ort.GraphOptimizationLevel) -> list[np.ndarray]:
    session = make_session(with_outputs(model, names), level=level, purpose="cross-check")
    return session.run(names, {session.get_inputs()[0].name: inputs})


def layer_powers(reference: ir.Model, candidate: ir.Model, inputs: np.ndarray) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """The weighted layers (name, output tensor) of ``candidate`` and per layer the summed signal
    and noise power of its output against ``reference``'s (none when the layers do not pair up).
    Runs in batches that hold every layer's output at once
    (:func:`~zsq_onnx.executors.runtime.batch_size_for`), so memory does not grow with the number
    of inputs; sums over shards of the inputs add up."""
    ref_layers, cand_layers = layer_outputs(reference), layer_outputs(candidate)
    if len(ref_layers) != len(cand_layers):
        return [], np.zeros(0), np.zeros(0)
    signal, noise = np.zeros(len(ref_layers)), np.zeros(len(ref_layers))
    if len(inputs) == 0:
        return cand_layers, signal, noise
    ref_session = make_session(with_outputs(reference, [t for _, t in ref_layers]), purpose="layer-sqnr")
    cand_session = make_session(with_outputs(candidate, [t for _, t in cand_layers]), purpose="layer-sqnr")
    size = batch_size_for(inputs, LAYER_OUTPUTS_PER_INPUT)
    for start in range(0, len(inputs), size):
        batch = inputs[start : start + size]
        ref_values = ref_session.run([t for _, t in ref_layers], {ref_session.get_inputs()[0].name: batch})
        cand_values = cand_session.run([t for _, t in cand_layers], {cand_session.get_inputs()[0].name: batch})
        for index, (r, c) in enumerate(zip(ref_values, cand_values)):
            batch_signal, batch_noise = signal_and_noise(r, c)
            signal[index] += batch_signal
            noise[index] += batch_noise
    return cand_layers, signal, noise


def ort_fusion(model: ir.Model) -> dict:
    """What ORT CPU (ENABLE_ALL) turns the model into: weighted ops run as integer kernels
    (QLinearConv, QLinearMatMul, ...) vs left as float kernels, and the integer kernels that can
    saturate on x86 CPUs without VNNI, from its optimized graph."""
    graph = optimized_graph(model, Execution.INTEGER)
    ops = Counter(node.op_type for node in graph.graph.node)
    fused = len(integer_kernels(graph))
    unfused = sum(ops[op] for op in FLOAT_WEIGHTED_OPS)
    saturating = saturating_kernels(graph)
    logger.info("ORT CPU runs %d weighted layers as integer kernels (%d can saturate without VNNI), %d as float kernels", fused, len(saturating), unfused)
    integer_ops = sorted({node.op_type for node in integer_kernels(graph)} | {op for op in OTHER_INTEGER_OPS if ops[op]})
    return {"fused": fused, "unfused": unfused, "integer_ops": {op: ops[op] for op in integer_ops}, "saturating_without_vnni": saturating}


def float_layers(model: ir.Model) -> list[str]:
    """Weighted nodes of an emitted model whose input is not dequantized: they run in float."""
    return [f"{n.op_type} {n.name}" for n in model.graph if n.op_type in WEIGHTED_OPS and not _dequantized(n.inputs[0])]


def _dequantized(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "DequantizeLinear"


def _quantizer_chains(model: ir.Model) -> list[tuple[str, str, float]]:
    """(input, dequantized output, largest scale) of every QuantizeLinear[->Clip]->DequantizeLinear
    with a constant scale on a computed tensor (granular quantizers compute theirs in the graph)."""
    chains = []
    for node in model.graph:
        if node.op_type != "QuantizeLinear":
            continue
        source, scale = node.inputs[0], node.inputs[1]
        if source.const_value is not None or scale.const_value is None:
            continue
        tail = _first_reader(node.outputs[0])
        if tail is not None and tail.op_type == "Clip":
            tail = _first_reader(tail.outputs[0])
        if tail is not None and tail.op_type == "DequantizeLinear":
            chains.append((source.name, tail.outputs[0].name, float(np.max(scale.const_value.numpy()))))
    return chains


def _first_reader(value: ir.Value) -> ir.Node | None:
    readers = value.consumers()
    return readers[0] if readers else None


def cross_check(model: ir.Model, inputs: np.ndarray, execution: Execution = Execution.FLOAT_QDQ) -> list[str]:
    """Warnings naming each quantizer where ORT (ENABLE_BASIC) and onnx.reference, given the same
    input tensor, differ by more than 1 LSB; and one when ORT ENABLE_ALL under ``execution`` (how
    the model is validated) strays from ENABLE_BASIC by more than 1/128 of its range on average
    (fused integer kernels that round differently shift most outputs; float sums in another order
    flip a low-bit level now and then, which moves a few logits and is not a fault).
    Meant for small models: onnx.reference is slow."""
    chains = _quantizer_chains(model)
    output = model.graph.outputs[0].name
    names = [name for chain in chains for name in chain[:2]]
    basic = dict(zip([*names, output], _run(model, [*names, output], inputs, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)))
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(ir.serde.serialize_model(model)))
    warnings = []
    for source, target, scale in chains:
        chain = ReferenceEvaluator(extractor.extract_model([source], [target]))
        expected = chain.run(None, {source: basic[source]})[0]
        lsb = float(np.max(np.abs(expected - basic[target]))) / scale
        logger.debug("cross-check of the quantizer of %s: ORT and onnx.reference differ by %.2f LSB", source, lsb)
        if lsb > 1.0 + 1e-3:
            warnings.append(f"quantizer of {source!r}: ORT and onnx.reference differ by {lsb:.1f} LSB")
    full = make_session(model, execution=execution, purpose="cross-check").run([output], {model.graph.inputs[0].name: inputs})[0]
    tolerance = max(1e-4, float(np.abs(basic[output]).max()) / 128)
    difference = np.abs(full - basic[output])
    if float(difference.mean()) > tolerance:
        warnings.append(f"output {output!r}: ORT ENABLE_ALL and ENABLE_BASIC differ by {float(difference.mean()):.4g} on average, "
                        f"{float(difference.max()):.4g} at most (fused integer kernels round differently)")
    logger.info("cross-check of %d quantizers and the output on %d inputs: %d warning(s)", len(chains), len(inputs), len(warnings))
    return warnings
