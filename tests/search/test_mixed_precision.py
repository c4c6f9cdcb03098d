"""ZeroQ mixed precision: the frontier DP against brute force, the sensitivities on digits-cnn, and
choose_bits' plan and record (the pipeline wiring: tests/test_pipeline.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import onnx_ir as ir
import pytest
import torch
from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from zsq_onnx.passes.fold_pad import FoldPadIntoConvPass
from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass
from zsq_onnx.pipeline import insert_quantizers, precision_search, target_plan
from zsq_onnx.plan.empirical_bias import EmpiricalBiasCorrectionPass
from zsq_onnx.plan.targets import find_weight_targets
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import MixedPrecisionConfig, build_recipe
from zsq_onnx.search.frontier import best_within, pareto_frontier, thin
from zsq_onnx.search.mixed_precision import choose_bits
from zsq_onnx.search.sensitivity import Sensitivity, input_probe
from zsq_onnx.synth.distill import distill


def _brute_force_best(costs, sensitivities, budget):
    best = None
    for choices in itertools.product(*(range(len(c)) for c in costs)):
        cost = sum(costs[layer][choice] for layer, choice in enumerate(choices))
        if cost <= budget:
            value = sum(sensitivities[layer][choice] for layer, choice in enumerate(choices))
            best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [1, 3])
def test_frontier_matches_brute_force(seed, scale):
    rng = np.random.default_rng(seed)
    layers, choices = 4 + seed % 2, 3
    costs = rng.integers(1, 12, (layers, choices)).tolist()
    sensitivities = rng.random((layers, choices)).tolist()
    span = sum(max(c) - min(c) for c in costs)
    frontier = pareto_frontier(costs, sensitivities, bins=scale * span)  # integer costs, bins a multiple of the span: exact
    assert [p.cost for p in frontier] == sorted(p.cost for p in frontier)
    assert all(a.sensitivity > b.sensitivity for a, b in zip(frontier, frontier[1:]))
    for point in frontier:
        assert point.cost == sum(costs[layer][c] for layer, c in enumerate(point.choices))
        assert point.sensitivity == pytest.approx(sum(sensitivities[layer][c] for layer, c in enumerate(point.choices)))
    lowest, highest = sum(map(min, costs)), sum(map(max, costs))
    for budget in np.linspace(lowest, highest, 7):
        index = best_within(frontier, budget)
        assert frontier[index].sensitivity == pytest.approx(_brute_force_best(costs, sensitivities, budget))
    assert best_within(frontier, lowest - 0.5) is None


def test_frontier_with_coarse_bins_stays_within_budget():
    rng = np.random.default_rng(7)
    costs = rng.random((6, 4)).tolist()
    sensitivities = rng.random((6, 4)).tolist()
    frontier = pareto_frontier(costs, sensitivities, bins=10)
    budget = sum(map(min, costs)) + 0.4 * (sum(map(max, costs)) - sum(map(min, costs)))
    chosen = frontier[best_within(frontier, budget)]
    assert chosen.cost <= budget
    assert chosen.sensitivity >= _brute_force_best(costs, sensitivities, budget) - 1e-12


def test_thin_keeps_the_ends_and_the_kept_points():
    costs = list(range(100))
    kept = thin(costs, 10, {37})
    assert kept[0] == 0 and kept[-1] == 99 and 37 in kept and len(kept) <= 10 and kept == sorted(kept)
    assert thin(costs[:5], 10) == list(range(5))


@pytest.fixture(scope="module")
def digits_setting(digits):
    _, model, entry = digits
    folded = apply_passes(
        model, FoldBatchNormPass(), FoldPadIntoConvPass(), NameFixPass(), ShapeInferencePass(check_type=False, strict_mode=False, data_prop=False)
    )
    batches = distill(model, entry.input_shape, build_recipe(samples=16, synth_steps=10).synth, 0, progress=False).batches
    return folded, batches


def _plan(folded, recipe):
    return target_plan(folded, recipe)


def _input_of(folded, node):
    return next(t.activation for t in find_weight_targets(folded.graph) if t.node == node)


def _kl(folded, quantized, batches):
    inputs = torch.from_numpy(np.concatenate(batches))
    with torch.no_grad():
        reference = torch.log_softmax(TorchGraph(folded)(inputs), 1)
        output = torch.log_softmax(TorchGraph(quantized)(inputs), 1)
    return float((reference.exp() * (reference - output)).sum(1).mean())


def _mixed(profile="sim", bits="W4A8", **config):
    return dataclasses.replace(build_recipe(bits=bits, profile=profile), mixed_precision=MixedPrecisionConfig(enabled=True, **config))


def test_weight_sensitivity_is_the_kl_of_the_pipelines_quantized_weight(digits_setting):
    folded, batches = digits_setting
    target = find_weight_targets(folded.graph)[1]
    spec = build_recipe(bits="W3A8").weights
    measured = Sensitivity(folded, batches).weights(target, [spec])[0]
    quantized = apply_passes(folded, QuantizeWeightsPass({target.node: spec}))
    assert measured == pytest.approx(_kl(folded, quantized, batches), rel=1e-4, abs=1e-7)


def test_bias_corrected_sensitivity_is_the_kl_after_the_pipelines_bias_correction(digits_setting):
    folded, batches = digits_setting
    target = find_weight_targets(folded.graph)[2]
    node = next(node for node in folded.graph if node.name == target.node)
    spec = build_recipe(bits="W2A8").weights
    sensitivity = Sensitivity(folded, batches)
    plain = sensitivity.weights(target, [spec])[0]
    corrected = sensitivity.weights(target, [spec], node.inputs[2].name, node.outputs[0].name)[0]
    quantized = apply_passes(folded, QuantizeWeightsPass({target.node: spec}), EmpiricalBiasCorrectionPass(folded, {target.node}, batches))
    assert corrected == pytest.approx(_kl(folded, quantized, batches), rel=1e-3, abs=1e-6)
    assert corrected != pytest.approx(plain, rel=1e-3)


def test_sensitivities_are_finite_and_fall_with_bits(digits_setting):
    folded, batches = digits_setting
    recipe = _mixed(avg_wbits=4)
    _, choice = choose_bits(folded, _plan(folded, recipe), batches, precision_search(recipe))
    searched = [layer for layer in choice.layers if not layer.fixed]
    assert len(searched) == 2 and all(not layer.sensitivity for layer in choice.layers if layer.fixed)
    for layer in searched:
        values = list(layer.sensitivity.values())
        assert list(layer.sensitivity) == ["2", "3", "4", "5", "6", "8"]
        assert all(np.isfinite(v) and v >= 0 for v in values)
    assert sum(layer.sensitivity["2"] > layer.sensitivity["8"] for layer in searched) >= len(searched) / 2 + 0.5


@pytest.mark.parametrize("profile", ["sim", "ort-cpu"])
def test_choose_bits_meets_the_average_bits_budget(digits_setting, profile):
    folded, batches = digits_setting
    recipe = _mixed(profile, avg_wbits=4)
    plan = _plan(folded, recipe)
    chosen, choice = choose_bits(folded, plan, batches, precision_search(recipe))
    layers = {layer.node: layer for layer in choice.layers}
    fixed = [name for name in plan.weights if layers[name].fixed]
    assert fixed == [list(plan.weights)[0], list(plan.weights)[-1]]
    assert all(chosen.weights[name] == plan.weights[name] for name in fixed), "the ends keep their plan specs (7 bits on ort-cpu)"
    searched = [layer for layer in choice.layers if not layer.fixed]
    average = sum(layer.params * layer.bits for layer in searched) / sum(layer.params for layer in searched)
    assert average <= 4 and choice.point.avg_wbits == pytest.approx(average)
    for layer in searched:
        spec = chosen.weights[layer.node]
        assert spec.bits == (7 if profile == "ort-cpu" and layer.bits == 8 else layer.bits)
        assert (spec.symmetric, spec.granularity) == (plan.weights[layer.node].symmetric, plan.weights[layer.node].granularity)
    sizes = [point.size_bytes for point in choice.frontier]
    assert sizes == sorted(sizes) and choice.point.size_bytes <= choice.budget["limit"]
    assert chosen.activations == plan.activations
    record = json.loads(json.dumps(choice.to_dict()))
    assert record == choice.to_dict()
    assert {"layers", "frontier", "chosen", "budget", "uniform"} <= set(record)
    assert [u["bits"] for u in record["uniform"]] == [2, 3, 4, 5, 6, 8]
    assert record["budget"] == {"kind": "avg_wbits", "value": 4, "cost": "size_bytes", "limit": pytest.approx(record["uniform"][2]["size_bytes"])}


def test_emitted_model_carries_the_chosen_bits(digits_setting):
    folded, batches = digits_setting
    recipe = _mixed(weight_bits=(4, 8), avg_wbits=6)  # digits: only the small conv at 8, the large one at 4, fits
    chosen, choice = choose_bits(folded, _plan(folded, recipe), batches, precision_search(recipe))
    assert sorted(layer.bits for layer in choice.layers if not layer.fixed) == [4, 8]
    emitted = emit(insert_quantizers(folded, chosen, batches, recipe))
    weight_of = {t.node: t.weight for t in find_weight_targets(folded.graph)}
    for layer in choice.layers:
        stored = [v.const_value.dtype for name, v in emitted.graph.initializers.items() if name in (f"{weight_of[layer.node]}.quantized", f"{weight_of[layer.node]}.quantized.u8")]
        assert len(stored) == 1 and (stored[0] == ir.DataType.INT4) == (layer.bits == 4), (layer.node, layer.bits, stored)


def test_search_activations_under_a_bops_budget(digits_setting):
    folded, batches = digits_setting
    recipe = _mixed(bops_budget=0.02, search_activations=True)
    plan = _plan(folded, recipe)
    chosen, choice = choose_bits(folded, plan, batches, precision_search(recipe))
    assert choice.budget["cost"] == "bops" and choice.point.bops <= 0.02
    for layer in choice.layers:
        if layer.fixed:
            assert not layer.activation_sensitivity and layer.activation_bits == 8
            continue
        assert list(layer.activation_sensitivity) == ["4", "8"] and all(v >= 0 for v in layer.activation_sensitivity.values())
        assert chosen.activations[_input_of(folded, layer.node)].bits == layer.activation_bits
        assert layer.macs > 0
    assert set(choice.point.activation_bits) == {layer.node for layer in choice.layers if not layer.fixed}


def test_input_probe_with_closed_gates_computes_the_float_model(digits_setting):
    folded, batches = digits_setting
    targets = find_weight_targets(folded.graph)[1:-1]
    probe, gates = input_probe(folded, targets, build_recipe(profile="sim").activations)
    assert set(gates) == {t.node for t in targets}
    inputs = torch.from_numpy(batches[0])
    with torch.no_grad():
        assert torch.equal(TorchGraph(probe)(inputs), TorchGraph(folded)(inputs))


def test_budget_below_the_cheapest_choice_is_bad_input(digits_setting):
    folded, batches = digits_setting
    recipe = _mixed(avg_wbits=1.5)
    with pytest.raises(BadInputError, match="below the cheapest"):
        choose_bits(folded, _plan(folded, recipe), batches, precision_search(recipe))
