"""``--mixed-precision``: ZeroQ's data-free choice of weight bits per layer (and, with
``--search-activations``, of input activation bits per layer) on the Pareto frontier of size (or
BOPs) against sensitivity.

1. Sensitivity (:mod:`~zsq_onnx.search.sensitivity`): for each searchable weighted layer and each
   candidate width, KL(FP32 output || output with only that layer's weight quantized at that
   width, as the pipeline would quantize it: scales from the weight's min/max and, when the
   recipe corrects biases, the bias corrected so that the layer's mean output per channel on
   these samples is the float one's), averaged over the synthetic samples; with
   ``search_activations`` also with only that layer's input quantized (per tensor, min/max range
   on the same samples). A layer's sensitivity for (weight, input) widths is the sum of the two.
2. Cost per layer and choice: weight bytes ``params x bits / 8``; BOPs ``MACs x weight bits x
   input bits`` (the plan's input width unless searched; 32 for a float input).
3. Frontier (:mod:`~zsq_onnx.search.frontier`): dynamic programming over layers on binned total
   cost (bytes, or BOPs under a BOPs budget), then the non-dominated points; the chosen point is
   the least sensitive whose true cost fits the budget.

The first and last weighted layers stay at their plan bits when the recipe keeps the ends at 8
bits; they count in every size and BOPs total but are not searched. On targets that reduce the
weight range (``ort-cpu``) the 8-bit candidate is the profile's 7-bit spec, reported as 8 bits
(it is stored in 8). ``size_bytes`` is ``params x bits / 8``, ZeroQ's measure, which
``avg_wbits`` budgets; ``disk_bytes`` counts the containers the weights occupy on disk (int4 for
2-4 bits where the profile stores 4-bit types, otherwise 8 bits), which ``size_kb`` budgets, so a
size budget is what the file's weights take.

:meth:`MixedPrecisionChoice.to_dict` (stored in the model metadata under :data:`METADATA_KEY`)::

    {"layers": [{"node", "params", "macs", "bits", "activation_bits", "fixed",
                 "sensitivity": {"<bits>": KL}, "activation_sensitivity": {"<bits>": KL}}],
     "frontier": [{"size_bytes", "disk_bytes", "sensitivity", "avg_wbits", "bops"}],   # cheapest first, at most 64 spread over cost
     "chosen": index into "frontier",
     "budget": {"kind": "avg_wbits" | "size_kb" | "bops", "value": as given,
                "cost": "size_bytes" | "disk_bytes" | "bops", "limit": the whole model's limit in that cost},
     "uniform": [{"bits", "size_bytes", "disk_bytes", "sensitivity", "avg_wbits", "bops"}],  # per weight width
     "search_activations": bool, "samples": int,
     "seconds": {"sensitivity", "frontier"}}

A ``size_kb`` budget is in KiB (1024 bytes, as ZeroQ's MB are MiB). Sizes and ``bops`` cover
every weighted layer (fixed ones at their bits), ``bops`` in
giga bit-operations per input sample; ``sensitivity`` sums the searchable layers' KL; ``avg_wbits``
is the parameter-weighted mean weight width of the searchable layers; the chosen point's widths
are the layers' ``bits`` and ``activation_bits``.
Sensitivity keys are the widths as strings, so the dict reads back from JSON unchanged. Each
``uniform`` entry puts every searchable layer at that weight width and its plan input width.
Where several searched layers read one tensor it is quantized at the widest of their choices;
BOPs count each layer at its own choice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from zsq_onnx.errors import BadInputError
from zsq_onnx.plan.calibrate import minmax_ranges
from zsq_onnx.plan.empirical_bias import output_layers
from zsq_onnx.plan.targets import QuantPlan, WeightTarget, find_weight_targets
from zsq_onnx.profiles import Profile, at_reduced_range
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import MixedPrecisionConfig
from zsq_onnx.search.frontier import DEFAULT_BINS, Assignment, best_within, pareto_frontier, thin

logger = logging.getLogger(__name__)

METADATA_KEY = "zsq.mixed_precision"
FLOAT_BITS = 32
GIGA = 1e9
KB = 1024
MAX_FRONTIER_POINTS = 64  # kept in the choice: its JSON goes into the model's metadata


@dataclass(frozen=True)
class LayerBits:
    """One weighted layer: its size, work, chosen widths and measured sensitivities."""

    node: str
    params: int
    macs: int
    bits: int
    activation_bits: int
    fixed: bool
    sensitivity: dict[str, float] = field(default_factory=dict)
    activation_sensitivity: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FrontierPoint:
    """One point of the frontier (see the module docstring for units)."""

    size_bytes: float
    disk_bytes: float
    sensitivity: float
    avg_wbits: float
    bops: float
    bits: dict[str, int]
    activation_bits: dict[str, int]


@dataclass(frozen=True)
class MixedPrecisionChoice:
    """The search's outcome: per layer, the frontier, the chosen point, the budget and the
    uniform settings for comparison (keys in the module docstring)."""

    layers: list[LayerBits]
    frontier: list[FrontierPoint]
    chosen: int
    budget: dict
    uniform: list[dict]
    search_activations: bool
    samples: int
    seconds: dict[str, float]

    def to_dict(self) -> dict:
        """Plain dict, suitable for JSON, kept small because it travels in the model's metadata:
        frontier points without their per-layer maps (the chosen one's are the layers' bits)."""
        record = dataclasses.asdict(self)
        for point in record["frontier"]:
            del point["bits"], point["activation_bits"]
        return record

    @property
    def point(self) -> FrontierPoint:
        """The chosen frontier point."""
        return self.frontier[self.chosen]


@dataclass(frozen=True)
class PrecisionSearch:
    """What the search reads: its budget and widths (``config``), the target (disk containers,
    reduce_range), whether the ends stay at 8 bits, whether the pipeline corrects biases (so the
    sensitivities measure what it will emit), and the activation spec of probed inputs."""

    config: MixedPrecisionConfig
    profile: Profile
    reduce_range: bool
    keep_ends_8bit: bool
    bias_correction: bool
    activations: QuantSpec


@dataclass(frozen=True)
class _Layer:
    target: WeightTarget
    params: int
    macs: int
    activation_bits: int  # the plan's input width (FLOAT_BITS when the input is not quantized)
    fixed_bits: int | None  # storage bits of a fixed layer, None when searched


def _fixed_nodes(plan: QuantPlan, keep_ends_8bit: bool) -> set[str]:
    """The first and last weighted nodes in plan order when the ends stay at 8 bits."""
    nodes = list(plan.weights)
    return {nodes[0], nodes[-1]} if keep_ends_8bit and nodes else set()


def _weight_spec(spec: QuantSpec, bits: int, reduce_range: bool) -> QuantSpec:
    """``spec`` at ``bits`` as the target stores it (8 bits become 7 where it reduces range)."""
    spec = dataclasses.replace(spec, bits=bits)
    return at_reduced_range(spec) if reduce_range else spec


def _storage_bits(spec: QuantSpec, reduce_range: bool) -> int:
    """The nominal width of a plan spec: a reduced-range 7-bit weight is the 8-bit candidate."""
    return 8 if spec.bits == 7 and reduce_range else spec.bits


def _budget(config: MixedPrecisionConfig, layers: Sequence[_Layer]) -> dict:
    """The budget as given and as a limit on the whole model's bytes or giga BOPs."""
    searched = sum(layer.params for layer in layers if layer.fixed_bits is None)
    fixed_bytes = sum(layer.params * layer.fixed_bits / 8 for layer in layers if layer.fixed_bits is not None)
    if config.avg_wbits is not None:
        return {"kind": "avg_wbits", "value": config.avg_wbits, "cost": "size_bytes", "limit": config.avg_wbits * searched / 8 + fixed_bytes}
    if config.size_budget_kb is not None:
        return {"kind": "size_kb", "value": config.size_budget_kb, "cost": "disk_bytes", "limit": config.size_budget_kb * KB}
    return {"kind": "bops", "value": config.bops_budget, "cost": "bops", "limit": config.bops_budget}


def _macs(target: WeightTarget, weight_shape: Sequence[int], output_elements: int) -> int:
    """Multiply-accumulates per sample: Conv, each output element takes a kernel over its group's
    input channels; Gemm/MatMul, each output row takes in x out (the weight's size per row)."""
    if target.op_type == "Conv":
        return output_elements * int(np.prod(weight_shape[1:]))
    out_features = weight_shape[target.weight_axis]
    return output_elements // max(out_features, 1) * int(np.prod(weight_shape))


def _correctable_bias(node: ir.Node, target: WeightTarget) -> str | None:
    """The name of a Conv's or Gemm's (beta 1) float bias initializer, one value per output
    channel, which bias correction would adjust; None when there is none to adjust in place."""
    if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    bias, channels = node.inputs[2], node.inputs[1].const_value.shape[target.weight_axis]
    if not bias.is_initializer() or bias.const_value is None or bias.const_value.dtype != ir.DataType.FLOAT or tuple(bias.const_value.shape) != (channels,):
        return None
    return bias.name if node.attributes.get_float("beta", 1.0) == 1.0 else None


def _measure(folded: ir.Model, plan: QuantPlan, batches: Sequence[np.ndarray], search: PrecisionSearch, targets: list[WeightTarget], fixed: set[str]):
    """Per-layer facts and sensitivities: (layers, weight KL per width, input KL per width)."""
    from zsq_onnx.search.sensitivity import Sensitivity, input_probe

    config = search.config
    searched = [t for t in targets if t.node not in fixed]
    gates = {}
    model = folded
    if config.search_activations and searched:
        model, gates = input_probe(folded, searched, plan.activations.get(searched[0].activation, search.activations))
    sensitivity = Sensitivity(model, batches)
    nodes = {node.name: node for node in folded.graph}
    elements = sensitivity.output_elements({t.node: nodes[t.node].outputs[0].name for t in targets})
    layers = []
    for target in targets:
        shape = tuple(nodes[target.node].inputs[1].const_value.shape)
        spec = plan.activations.get(target.activation)
        layers.append(_Layer(target, int(np.prod(shape)), _macs(target, shape, elements[target.node]), spec.bits if spec else FLOAT_BITS,
                             _storage_bits(plan.weights[target.node], search.reduce_range) if target.node in fixed else None))
    weight_kl = {}
    uncorrected = output_layers(folded.graph, plan.weights)  # as the pipeline's bias correction leaves them
    for t in searched:
        specs = [_weight_spec(plan.weights[t.node], b, search.reduce_range) for b in config.weight_bits]
        bias = _correctable_bias(nodes[t.node], t) if search.bias_correction and t.node not in uncorrected else None
        weight_kl[t.node] = sensitivity.weights(t, specs, bias, nodes[t.node].outputs[0].name if bias else None)
    input_kl: dict[str, list[float]] = {}
    if gates:
        ranges = minmax_ranges(folded, list(dict.fromkeys(t.activation for t in searched)), batches)
        for t in searched:
            base = plan.activations.get(t.activation, search.activations)
            specs = [QuantSpec(a, base.symmetric, "per_tensor") for a in config.activation_bits]
            input_kl[t.node] = sensitivity.inputs(gates[t.node], specs, ranges[t.activation])
    return layers, weight_kl, input_kl


def _options(layer: _Layer, config: MixedPrecisionConfig) -> list[tuple[int, int]]:
    """(weight bits, input bits) a searched layer may take."""
    inputs = config.activation_bits if config.search_activations else (layer.activation_bits,)
    return [(w, a) for w in config.weight_bits for a in inputs]


def _point(layers: Sequence[_Layer], picks: Sequence[tuple[int, int]], sensitivity: float, search_activations: bool, profile: Profile) -> FrontierPoint:
    """A frontier point from the (weight, input) widths of the searched layers, in order."""
    searched = [layer for layer in layers if layer.fixed_bits is None]
    widths = [(layer, layer.fixed_bits, layer.activation_bits) for layer in layers if layer.fixed_bits is not None]
    widths += [(layer, w, a) for layer, (w, a) in zip(searched, picks)]
    size = sum(layer.params * w / 8 for layer, w, _ in widths)
    disk = sum(layer.params * profile.weight_container_bits(w) / 8 for layer, w, _ in widths)
    bops = sum(layer.macs * w * a for layer, w, a in widths)
    params = sum(layer.params for layer in searched)
    average = sum(layer.params * w for layer, (w, _) in zip(searched, picks)) / params if params else 0.0
    bits = {layer.target.node: w for layer, (w, _) in zip(searched, picks)}
    activation_bits = {layer.target.node: a for layer, (_, a) in zip(searched, picks)} if search_activations else {}
    return FrontierPoint(float(size), float(disk), float(sensitivity), float(average), float(bops / GIGA), bits, activation_bits)


def _chosen_plan(plan: QuantPlan, reduce_range: bool, layers: Sequence[_Layer], point: FrontierPoint) -> QuantPlan:
    """``plan`` with the point's weight widths, and input widths when searched (a tensor read by
    several searched layers at the widest; by a fixed layer, at its plan spec)."""
    weights = dict(plan.weights)
    for node, bits in point.bits.items():
        weights[node] = _weight_spec(plan.weights[node], bits, reduce_range)
    activations = dict(plan.activations)
    if point.activation_bits:
        widest: dict[str, int] = {}
        pinned = {layer.target.activation for layer in layers if layer.fixed_bits is not None}
        for layer in layers:
            name = layer.target.activation
            if layer.target.node in point.activation_bits and name in activations and name not in pinned:
                widest[name] = max(widest.get(name, 0), point.activation_bits[layer.target.node])
        activations.update({name: dataclasses.replace(activations[name], bits=bits) for name, bits in widest.items()})
    return QuantPlan(weights, activations, plan.rules)


@dataclass(frozen=True)
class _Sensitivities:
    """Measured KL per searched node: per weight width and, when searched, per input width."""

    weight_bits: tuple[int, ...]
    activation_bits: tuple[int, ...]
    weights: dict[str, list[float]]
    inputs: dict[str, list[float]]

    def of(self, node: str, w: int, a: int) -> float:
        """Sensitivity of ``node`` with its weight at ``w`` bits and its input at ``a`` (the input
        adds nothing when it was not searched or ``a`` was not measured)."""
        kl = self.weights[node][self.weight_bits.index(w)]
        if node in self.inputs and a in self.activation_bits:
            kl += self.inputs[node][self.activation_bits.index(a)]
        return kl

    def report(self, node: str) -> tuple[dict[str, float], dict[str, float]]:
        """The node's weight and input sensitivities keyed by width (as strings, for JSON)."""
        return ({str(w): kl for w, kl in zip(self.weight_bits, self.weights.get(node, []))},
                {str(a): kl for a, kl in zip(self.activation_bits, self.inputs.get(node, []))})


def _uniform(layers: Sequence[_Layer], kl: _Sensitivities, profile: Profile) -> list[dict]:
    """For each weight width: every searched layer at it and at its plan input width."""
    searched = [layer for layer in layers if layer.fixed_bits is None]
    result = []
    for w in kl.weight_bits:
        picks = [(w, layer.activation_bits) for layer in searched]
        point = _point(layers, picks, sum(kl.of(layer.target.node, w, a) for layer, (_, a) in zip(searched, picks)), False, profile)
        result.append({"bits": w, "size_bytes": point.size_bytes, "disk_bytes": point.disk_bytes, "sensitivity": point.sensitivity, "avg_wbits": point.avg_wbits, "bops": point.bops})
    return result


def _too_small(budget: dict, cheapest: FrontierPoint, bits: int, fixed: bool) -> BadInputError:
    unit = {"avg_wbits": "average weight bits", "size_kb": "KiB", "bops": "GBOPs"}[budget["kind"]]
    least = {"avg_wbits": cheapest.avg_wbits, "size_kb": cheapest.disk_bytes / KB, "bops": cheapest.bops}[budget["kind"]]
    return BadInputError(f"mixed-precision budget {budget['value']:g} {unit} is below the cheapest choice, {least:.4g} {unit} "
                         f"(every searched layer at {bits} bits{', the ends at their plan bits' if fixed else ''})")


def choose_bits(
    folded: ir.Model, plan: QuantPlan, batches: Sequence[np.ndarray], search: PrecisionSearch, bins: int = DEFAULT_BINS, max_points: int | None = MAX_FRONTIER_POINTS,
) -> tuple[QuantPlan, MixedPrecisionChoice]:
    """``plan`` with per-layer weight bits (and input bits with ``search_activations``) at the
    least sensitive frontier point within the search's budget, and the search behind it (module
    docstring). ``folded`` is the BN-folded, shape-inferred FP32 model; ``batches`` the
    synthetic inputs; ``bins`` the DP's cost bins. The choice keeps at most ``max_points``
    frontier points spread evenly over cost, the chosen one always among them (None: all). A
    budget below the cheapest reachable point is a BadInputError."""
    config = search.config
    start = time.perf_counter()
    fixed = _fixed_nodes(plan, search.keep_ends_8bit)
    targets = [t for t in find_weight_targets(folded.graph) if t.node in plan.weights]
    layers, weight_kl, input_kl = _measure(folded, plan, batches, search, targets, fixed)
    kl = _Sensitivities(config.weight_bits, config.activation_bits, weight_kl, input_kl)
    measured = time.perf_counter()
    budget = _budget(config, layers)
    searched = [layer for layer in layers if layer.fixed_bits is None]
    options = [_options(layer, config) for layer in searched]
    option_cost = {
        "bops": lambda layer, w, a: layer.macs * w * a / GIGA,
        "size_bytes": lambda layer, w, a: layer.params * w / 8,
        "disk_bytes": lambda layer, w, a: layer.params * search.profile.weight_container_bits(w) / 8,
    }[budget["cost"]]
    costs = [[option_cost(layer, w, a) for w, a in choices] for layer, choices in zip(searched, options)]
    sensitivities = [[kl.of(layer.target.node, w, a) for w, a in choices] for layer, choices in zip(searched, options)]
    assignments = pareto_frontier(costs, sensitivities, bins)
    frontier = [_point(layers, [choices[c] for choices, c in zip(options, a.choices)], a.sensitivity, config.search_activations, search.profile) for a in assignments]
    chosen = best_within([Assignment(a.choices, getattr(p, budget["cost"]), p.sensitivity) for a, p in zip(assignments, frontier)], budget["limit"])
    if chosen is None:
        raise _too_small(budget, frontier[0], min(config.weight_bits), bool(fixed))
    finished = time.perf_counter()
    point = frontier[chosen]
    if max_points is not None:
        kept = thin([getattr(p, budget["cost"]) for p in frontier], max_points, {chosen})
        frontier, chosen = [frontier[i] for i in kept], kept.index(chosen)
    reports = []
    for layer in layers:
        node = layer.target.node
        bits = (point.bits.get(node, layer.fixed_bits), point.activation_bits.get(node, layer.activation_bits))
        reports.append(LayerBits(node, layer.params, layer.macs, *bits, layer.fixed_bits is not None, *kl.report(node)))
    seconds = {"sensitivity": measured - start, "frontier": finished - measured}
    choice = MixedPrecisionChoice(reports, frontier, chosen, budget, _uniform(layers, kl, search.profile), config.search_activations, sum(len(b) for b in batches), seconds)
    logger.info("mixed precision: %.2f average weight bits, %.1f KiB of weights, %.4g GBOPs, sensitivity %.4g (frontier of %d points, %d layers searched, %d fixed) in %.1f s",
                point.avg_wbits, point.size_bytes / KB, point.bops, point.sensitivity, len(assignments), len(searched), len(fixed), finished - start)
    return _chosen_plan(plan, search.reduce_range, layers, point), choice
