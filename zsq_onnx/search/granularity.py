"""``--granularity auto``: per activation tensor, per-tensor static, per-channel static or granular.

For every tensor that may be granular (rank 3+, not an 8-bit end) each candidate quantizer is
scored by two measurements:

* error: the noise-to-signal ratio it causes at the outputs of the layers that read the tensor,
  on the calibration (synthetic) inputs. One ORT probe model computes all of them at once: every
  reader is cloned once per candidate, the clone reading the quantized tensor and the original
  the float one, so each layer's error is its own and not the sum of the layers before it;
* cost: the ORT CPU time at batch 64 of the quantizer and the layers reading the tensor,
  emitted for the profile on their own (so an integer kernel lost to a dynamic scale counts).

Upgrades from per-tensor static are ordered by noise removed per extra millisecond; the model
keeps the longest of a few prefixes of that order (all of it, 3/4, 1/2, 1/4) whose whole
emitted graph, measured in ORT CPU, runs
within (1 + budget) x the latency at batch 64 of the FP32 model or of the all-static graph,
whichever is slower (``--granularity-budget``): on ort-cpu, whose static graph runs integer
kernels, that is 1.3x FP32 at the default 0.3; on sim, 1.3x its own static graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx.executors.runtime import latency_ms, make_session
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.quantize_activations import QuantizeActivationsPass
from zsq_onnx.passes.quantize_bias import QuantizeBiasPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions
from zsq_onnx.plan.calibrate import minmax_ranges, with_outputs
from zsq_onnx.plan.targets import QuantPlan, activation_uses
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.params import range_params
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import Recipe

CANDIDATES: tuple[str, ...] = ("per_tensor", "per_channel", "granular")
COST_BATCH = 64
TOLERANCE_DB = 0.5
GOOD_DB = 35.0
METADATA_KEY = "zsq.granularity"

Range = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TensorChoice:
    """The granularity chosen for one activation tensor, with every candidate's measurements."""

    tensor: str
    choice: str
    sqnr_db: dict[str, float]
    cost_ms: dict[str, float]


@dataclass(frozen=True)
class GranularityChoice:
    """The auto choice for a whole model: per tensor; and latencies relative to FP32 (ORT CPU,
    batch 64) of the all-static graph, the limit, and the chosen graph."""

    tensors: list[TensorChoice]
    static_vs_fp32: float
    limit_vs_fp32: float
    chosen_vs_fp32: float

    def to_dict(self) -> dict:
        """Plain dict, suitable for JSON."""
        return asdict(self)


def _kind_ranges(ranges: Range, kind: str) -> Range:
    """Per-channel calibrated ranges as the ``kind`` quantizer uses them (scalars per tensor)."""
    low, high = ranges
    return (np.asarray(low.min(), np.float32), np.asarray(high.max(), np.float32)) if kind == "per_tensor" else (low, high)


def _candidate_quantizer(graph: ir.Graph, source: ir.Value, kind: str, spec: QuantSpec, ranges: Range, prefix: str) -> ir.Node:
    if kind == "granular":
        return add_granular_quantizer(graph, source, spec, prefix)
    static = QuantSpec(spec.bits, spec.symmetric, kind)
    scale, zero_point = range_params(*_kind_ranges(ranges, kind), static)
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


def _probe_model(folded: ir.Model, specs: Mapping[str, QuantSpec], ranges: Mapping[str, Range], rules: Sequence[str]) -> tuple[ir.Model, dict]:
    """The FP32 model plus, per candidate, a clone of each reader of each tensor reading the
    quantized tensor; returns it and {(tensor, kind): [(float output, clone output), ...]}."""
    model = folded.clone()
    ensure_quantizer_functions(model)
    graph = model.graph
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    quantized: dict[tuple[str, str], ir.Value] = {}
    for node, index in activation_uses(graph, rules):
        source = node.inputs[index]
        if source.name not in specs:
            continue
        for kind in CANDIDATES:
            key = (source.name, kind)
            if key not in quantized:
                quantizer = _candidate_quantizer(graph, source, kind, specs[source.name], ranges[source.name], f"{source.name}.probe_{kind}")
                graph.insert_before(node, quantizer)
                quantized[key] = quantizer.outputs[0]
            probe = _clone(node, index, quantized[key], f".probe_{kind}_{index}")
            graph.outputs.extend([node.outputs[0], probe])
            pairs.setdefault(key, []).append((node.outputs[0].name, probe.name))
    graph.outputs[:] = list(dict.fromkeys(graph.outputs))
    return model, pairs


def layer_sqnr(
    folded: ir.Model, specs: Mapping[str, QuantSpec], ranges: Mapping[str, Range], rules: Sequence[str], batches: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
    """SQNR (dB) at the readers' outputs of each tensor in ``specs``, quantized each candidate way."""
    probe, pairs = _probe_model(folded, specs, ranges, rules)
    session = make_session(probe)
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    noise = dict.fromkeys(pairs, 0.0)
    signal = dict.fromkeys(pairs, 0.0)
    for batch in batches:
        values = dict(zip(names, session.run(names, {input_name: np.asarray(batch, np.float32)})))
        for key, outputs in pairs.items():
            for reference, quantized in outputs:
                noise[key] += float(np.sum((values[quantized].astype(np.float64) - values[reference]) ** 2))
                signal[key] += float(np.sum(values[reference].astype(np.float64) ** 2))
    result: dict[str, dict[str, float]] = {}
    for (tensor, kind), value in noise.items():
        result.setdefault(tensor, {})[kind] = float(10 * np.log10(max(signal[(tensor, kind)], 1e-30) / max(value, 1e-30)))
    return result


def _reader_block(graph: ir.Graph, tensor: str, readers: Sequence[ir.Node], shapes: Mapping[str, tuple[int, ...]]) -> ir.Model:
    """A model of just the layers reading ``tensor``: its computed inputs become graph inputs
    (batch COST_BATCH), initializers are shared, and every output is quantized per tensor as the
    next layer's quantizer would (so integer targets can fuse the block as in the full graph)."""
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


def layer_cost_ms(
    folded: ir.Model, tensor: str, kind: str, ranges: Range, plan: QuantPlan, recipe: Recipe, shapes: Mapping[str, tuple[int, ...]], repeats: int = 10
) -> float:
    """ORT CPU milliseconds, at batch COST_BATCH, of ``tensor``'s quantizer of ``kind`` and the
    layers reading it, emitted for ``profile`` (so an integer kernel lost to a dynamic scale counts)."""
    graph = folded.graph
    readers = list(dict.fromkeys(node for node, index in activation_uses(graph, plan.rules) if node.inputs[index].name == tensor))
    block = _reader_block(graph, tensor, readers, shapes)
    spec, profile = plan.activations[tensor], recipe.profile
    profile.record(block)
    chosen = QuantSpec(spec.bits, spec.symmetric, kind)
    weights = {node.name: plan.weights[node.name] for node in readers if node.name in plan.weights}
    quantized = apply_passes(
        block,
        QuantizeActivationsPass({tensor: chosen}, {tensor: _kind_ranges(ranges, kind)}, plan.rules, profile.activation_4bit_types(recipe), profile.routes_all_readers(recipe)),
        QuantizeWeightsPass(weights, profile.use_4bit_types),
        QuantizeBiasPass(),
    )
    session = make_session(emit(quantized))
    rng = np.random.default_rng(0)
    return latency_ms(session, {i.name: rng.standard_normal(shapes[i.name]).astype(np.float32) for i in session.get_inputs()}, repeats)


def upgrade_order(
    sqnr_db: Mapping[str, Mapping[str, float]], cost_ms: Mapping[str, Mapping[str, float]], tolerance_db: float = TOLERANCE_DB, good_db: float = GOOD_DB
) -> list[tuple[str, str]]:
    """The upgrades (tensor, kind) from per-tensor static everywhere, best first.

    Per tensor the target is the cheapest candidate within ``tolerance_db`` of its best SQNR
    (per-tensor itself when it already reaches ``good_db``); tensors move toward their targets by
    the upgrade that removes the most noise (noise-to-signal ratio) per extra millisecond."""
    noise = {t: {k: 10 ** (-db / 10) for k, db in kinds.items()} for t, kinds in sqnr_db.items()}
    allowed: dict[str, set[str]] = {}
    for tensor, kinds in sqnr_db.items():
        best = max(kinds.values())
        good = [k for k, db in kinds.items() if db >= min(best - tolerance_db, good_db)]
        target = min(good, key=lambda k: cost_ms[tensor][k])
        allowed[tensor] = {k for k in kinds if cost_ms[tensor][k] <= cost_ms[tensor][target]}
    choice = {tensor: "per_tensor" for tensor in noise}
    order: list[tuple[str, str]] = []
    while True:
        best_move, best_rate = None, 0.0
        for tensor, kinds in noise.items():
            current = choice[tensor]
            for kind in allowed[tensor]:
                gain = kinds[current] - kinds[kind]
                if gain <= 0:
                    continue
                rate = gain / max(cost_ms[tensor][kind] - cost_ms[tensor][current], 1e-6)
                if best_move is None or rate > best_rate:
                    best_move, best_rate = (tensor, kind), rate
        if best_move is None:
            return order
        choice[best_move[0]] = best_move[1]
        order.append(best_move)


def _after(tensors: Sequence[str], order: Sequence[tuple[str, str]], count: int) -> dict[str, str]:
    """The choice per tensor after the first ``count`` upgrades of ``order``."""
    choice = {tensor: "per_tensor" for tensor in tensors}
    choice.update(order[:count])
    return choice


def choose_granularity(
    folded: ir.Model, plan: QuantPlan, batches: Sequence[np.ndarray], recipe: Recipe, build: Callable[[QuantPlan], ir.Model]
) -> tuple[QuantPlan, GranularityChoice]:
    """Replace each granular spec of ``plan`` by the auto choice (module docstring) for the
    recipe's profile. ``build`` makes the quantized model of a plan; the longest of
    :func:`prefix_lengths` of the upgrade order whose emitted model runs within
    (1 + ``granularity_budget``) x the FP32 or the all-static graph's latency, whichever is
    slower, at batch 64 in ORT CPU is kept (measured)."""
    specs = {name: spec for name, spec in plan.activations.items() if spec.granularity == "granular"}
    if not specs:
        return plan, GranularityChoice([], 1.0, 1.0, 1.0)
    ranges = minmax_ranges(folded, list(specs), batches, per_channel=set(specs))
    sqnr = layer_sqnr(folded, specs, ranges, plan.rules, batches)
    graph = folded.graph
    uses = [node for node, _ in activation_uses(graph, plan.rules)]
    block_values = [v.name for node in uses for v in [*node.inputs, node.outputs[0]] if v is not None and v.const_value is None]
    shapes = _batch_shapes(folded, list(dict.fromkeys(block_values)), batches[0][:1])
    kinds = candidates(recipe)
    costs = {tensor: {kind: layer_cost_ms(folded, tensor, kind, ranges[tensor], plan, recipe, shapes) for kind in kinds} for tensor in specs}
    sqnr = {tensor: {kind: sqnr[tensor][kind] for kind in kinds} for tensor in specs}
    sample = np.zeros((COST_BATCH, *batches[0].shape[1:]), np.float32)
    fp32 = make_session(folded)
    order = upgrade_order(sqnr, costs)

    def with_choice(count: int) -> QuantPlan:
        picked = _after(list(specs), order, count)
        activations = {name: QuantSpec(spec.bits, spec.symmetric, picked[name]) if name in picked else spec for name, spec in plan.activations.items()}
        return QuantPlan(plan.weights, activations, plan.rules)

    def relative_latency(count: int) -> float:
        """Latency of the graph with ``count`` upgrades over FP32's, timed back to back so that
        load on the machine cancels out."""
        session = make_session(emit(build(with_choice(count))))
        return latency_ms(session, sample) / latency_ms(fp32, sample)

    static = relative_latency(0)
    limit = (1 + recipe.granularity_budget) * max(1.0, static)
    count, relative = 0, static
    for candidate in prefix_lengths(len(order)):
        candidate_relative = relative_latency(candidate)
        if candidate_relative <= limit:
            count, relative = candidate, candidate_relative
            break
    picked = _after(list(specs), order, count)
    tensors = [TensorChoice(name, picked[name], sqnr[name], costs[name]) for name in specs]
    return with_choice(count), GranularityChoice(tensors, static, limit, relative)


def prefix_lengths(total: int, tries: int = 4) -> list[int]:
    """Prefix lengths of the upgrade order to time, longest first: all of it, then evenly fewer.
    Latency is not monotonic in the prefix (a static layer between granular ones loses its
    integer kernel and pays for both quantizers), so a bisection could stop far too short."""
    return sorted({round(total * (tries - i) / tries) for i in range(tries)} - {0}, reverse=True)


def candidates(recipe: Recipe) -> tuple[str, ...]:
    """The candidate kinds for the recipe's profile: not per-channel static on integer targets,
    whose QDQ fusion ORT CPU turns into QLinearConv/QLinearGlobalAveragePool kernels that fail at
    run time on a per-channel activation scale (see Profile.check)."""
    if recipe.profile.integer_kernels:
        return tuple(kind for kind in CANDIDATES if kind != "per_channel")
    return CANDIDATES


def _batch_shapes(folded: ir.Model, names: list[str], sample: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape at batch COST_BATCH, from one run on a single sample."""
    session = make_session(with_outputs(folded, names))
    values = session.run(names, {session.get_inputs()[0].name: np.asarray(sample, np.float32)})
    return {name: (COST_BATCH, *value.shape[1:]) for name, value in zip(names, values)}
