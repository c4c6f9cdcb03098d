"""The recipe: options defined once (enums), defaults on the fields, a versioned JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zsq_onnx import cli
from zsq_onnx.errors import BadInputError
from zsq_onnx.options import ActivationQuantizer, CalibrationMethod, Device, Granularity, GranularityMode, Optimizer, ReconstructMode, Synthesizer, WeightLevels, WeightRange, WeightRounding
from zsq_onnx.profiles import PROFILES
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import (
    DEFAULT_RECIPE,
    LOW_BIT_SYNTH_STEPS,
    RECIPE_OPTIONS,
    RECIPE_VERSION,
    FinetuneConfig,
    GeneratorConfig,
    MixedPrecisionConfig,
    Recipe,
    ReconstructConfig,
    SynthConfig,
    build_recipe,
)


def _every_field_changed() -> Recipe:
    return Recipe(
        weights=QuantSpec(4, False, Granularity.PER_TENSOR, weight_range=WeightRange.MSE),
        activations=QuantSpec(6, True, Granularity.GRANULAR),
        profile=PROFILES["sim"],
        keep_ends_8bit=False,
        reduce_range=True,
        synth=SynthConfig(samples=7, steps=3, batch_size=5, lr=0.25, synthesizer=Synthesizer.GENERATOR,
                          generator=GeneratorConfig(warmup_steps=5, lr=0.01, batch_size=8, latent_dim=20, margin_low=0.2, margin_high=0.7,
                                                    disagreement_weight=0.3, agreement_weight=0.2, ce_weight=0.5, bn_weight=2.0)),
        seed=11,
        granularity=GranularityMode.AUTO,
        granularity_budget=0.5,
        finetune=FinetuneConfig(steps=9, minutes=1.5, lr=0.02, weight_lr=2e-5, train_weights=True, optimizer=Optimizer.SGD, batch_size=4,
                                samples=8, temperature=2.0, bn_loss=0.1, device=Device.CUDA),
        calibration_method=CalibrationMethod.MSE,
        calibration_percentile=99.5,
        bias_correction=False,
        mixed_precision=MixedPrecisionConfig(enabled=True, weight_bits=(3, 4, 8), activation_bits=(6, 8), search_activations=True, bops_budget=2.5),
        reconstruct=ReconstructConfig(weight_rounding=WeightRounding.ADAROUND, damping=0.05, block_size=64, iterations=50, mode=ReconstructMode.BLOCK, block_iterations=20),
    )


def _leaves(data: dict, prefix: str = "") -> dict:
    found = {}
    for key, value in data.items():
        found.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return found


def test_round_trip_of_a_recipe_with_every_field_changed():
    recipe = _every_field_changed()
    default, changed = _leaves(DEFAULT_RECIPE.to_dict()), _leaves(recipe.to_dict())
    # adaptive activation quantizers need --granularity static and lookup-table weights no mixed
    # precision: the two recipes below change them; mixed precision takes one budget, so the other
    # two stay unset; activations always have uniform levels and no weight range
    assert sorted(key for key in default if default[key] == changed[key]) == [
        "activations.levels", "activations.weight_range", "finetune.activation_quantizer", "mixed_precision.avg_wbits", "mixed_precision.size_budget_kb",
        "version", "weights.levels"]
    adaptive = dataclasses.replace(recipe, granularity="static", activations=QuantSpec(6, True, Granularity.PER_CHANNEL),
                                   finetune=dataclasses.replace(recipe.finetune, activation_quantizer="adaptive"))
    lookup_table = dataclasses.replace(recipe, weights=QuantSpec(3, True, Granularity.PER_TENSOR, WeightLevels.POST), mixed_precision=MixedPrecisionConfig())
    for each in (recipe, adaptive, lookup_table):
        text = each.to_json()
        assert json.loads(text)["version"] == RECIPE_VERSION and json.loads(text)["finetune"]["optimizer"] == "sgd"
        decoded = Recipe.from_json(text)
        assert decoded == each
        assert type(decoded.finetune.device) is Device and type(decoded.activations.granularity) is Granularity and type(decoded.weights.levels) is WeightLevels
        assert type(decoded.synth.synthesizer) is Synthesizer


def test_granular_round_trip():
    recipe = build_recipe(bits="W4A4", profile="sim", granularity="granular")
    assert recipe.activations.granularity is Granularity.GRANULAR and recipe.granularity is GranularityMode.GRANULAR
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_version_1_recipe_loads_with_minmax_and_no_bias_correction():
    older = DEFAULT_RECIPE.to_dict()
    for key in ("version", "calibration_method", "calibration_percentile", "bias_correction"):
        del older[key]
    loaded = Recipe.from_dict(older)
    assert loaded == dataclasses.replace(DEFAULT_RECIPE, calibration_method="minmax", bias_correction=False)
    # a version-1 recipe that names them keeps them; a version-2 one that leaves them out takes the defaults
    assert Recipe.from_dict({**older, "calibration_method": "mse", "bias_correction": True}).calibration_method == "mse"
    assert Recipe.from_dict({**older, "version": RECIPE_VERSION}) == DEFAULT_RECIPE


def test_missing_keys_take_the_field_defaults():
    assert Recipe.from_dict({"version": RECIPE_VERSION, "finetune": {"steps": 3}}) == dataclasses.replace(DEFAULT_RECIPE, finetune=FinetuneConfig(steps=3))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"colour": "red"}, ("unknown key", "colour")),
        ({"finetune": {"optimiser": "adam"}}, ("unknown key", "finetune.optimiser")),
        ({"finetune": {"optimizer": "lbfgs"}}, ("finetune.optimizer", "lbfgs", "'adam'")),
        ({"weights": {"granularity": "per_row"}}, ("weights.granularity", "per_row")),
        ({"seed": "3"}, ("seed", "int")),
        ({"keep_ends_8bit": 1}, ("keep_ends_8bit", "bool")),
        ({"synth": [1, 2]}, ("synth", "object")),
        ({"version": 3}, ("version 3",)),
        ({"profile": "gpu"}, ("unknown profile", "gpu")),
        ({"synth": {"synthesizer": "gan"}}, ("synth.synthesizer", "gan", "'generator'")),
        ({"synth": {"generator": {"margin_low": 0.9}}}, ("--margin-low", "--margin-high")),
        ({"synth": {"samples": 0}}, ("synthesis settings must be positive", "samples 0")),
        ({"synth": {"steps": -3}}, ("synthesis settings must be positive", "steps -3")),
        ({"synth": {"lr": float("nan")}}, ("synthesis settings must be positive", "lr nan")),
        ({"finetune": {"lr": float("nan")}}, ("fine-tuning", "positive")),
        ({"finetune": {"minutes": float("nan")}}, ("--finetune-minutes",)),
        ({"synth": {"generator": {"lr": float("nan")}}}, ("--generator-steps",)),
        ({"seed": -1}, ("--seed", "-1")),
        ({"granularity_budget": float("nan")}, ("--granularity-budget",)),
    ],
)
def test_bad_recipes_are_refused_with_exit_2(data, words):
    with pytest.raises(BadInputError) as caught:
        Recipe.from_dict({"version": RECIPE_VERSION, **data})
    assert caught.value.exit_code == 2
    for word in words:
        assert word in str(caught.value)


def test_constructors_take_strings_and_store_members():
    recipe = Recipe(granularity="auto", activations=QuantSpec(8, False, "granular"), calibration_method="entropy")
    assert recipe.granularity is GranularityMode.AUTO and recipe.calibration_method is CalibrationMethod.ENTROPY
    with pytest.raises(BadInputError, match="--device 'tpu'; expected one of cpu, cuda"):
        FinetuneConfig(device="tpu")


def test_build_recipe_defaults_are_the_field_defaults():
    assert build_recipe() == DEFAULT_RECIPE


def test_build_recipe_takes_each_option_flat_or_its_config_whole():
    flat = build_recipe(finetune_steps=3, train_weights=True, optimizer="sgd", mixed_precision_enabled=True, avg_wbits=5.0, mp_weight_bits="4,8",
                        generator_steps=7, margin_low=0.2, synth_lr=0.1, weight_rounding="gptq")
    assert flat.finetune == FinetuneConfig(steps=3, train_weights=True, optimizer="sgd")
    assert flat.mixed_precision == MixedPrecisionConfig(enabled=True, avg_wbits=5.0, weight_bits=(4, 8))
    assert flat.synth == SynthConfig(steps=LOW_BIT_SYNTH_STEPS, lr=0.1, generator=GeneratorConfig(warmup_steps=7, margin_low=0.2))
    assert flat.reconstruct == ReconstructConfig(weight_rounding="gptq")
    whole = build_recipe(finetune=FinetuneConfig(steps=3, optimizer="sgd"), finetune_lr=0.5, finetune_minutes=None)
    assert whole.finetune == FinetuneConfig(steps=3, optimizer="sgd", lr=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        build_recipe(steps=3)


def test_options_whose_shape_is_not_their_field():
    bits = build_recipe(bits="W4A6", abits=8, profile="sim")
    assert (bits.weights.bits, bits.activations.bits) == (4, 8)
    assert build_recipe(profile="tensorrt").activations.symmetric and not build_recipe(profile="sim").activations.symmetric
    assert build_recipe(profile="sim", act_symmetric=True).activations.symmetric
    assert build_recipe(weight_granularity="per-tensor").weights.granularity is Granularity.PER_TENSOR
    assert build_recipe(profile="sim", granularity="auto", act_granularity="per-channel").activations.granularity is Granularity.GRANULAR
    with pytest.raises(BadInputError, match="--mp-weight-bits takes comma-separated integers such as 2,3,4,5,6,8, got '4,x'"):
        build_recipe(mp_weight_bits="4,x")


@pytest.mark.parametrize("command", ["convert", "synth"])
def test_each_declared_option_is_a_cli_option_with_the_field_default(command):
    params = {param.name: param for param in cli.main.commands[command].params}
    for option in RECIPE_OPTIONS:
        name = option.flag.option(command) if option.flag is not None else None
        if name is None:
            assert option.keyword not in params
            continue
        param = params[option.keyword]
        assert name.split("/")[0] in param.opts and param.help == option.flag.help
        assert option.default is False if param.is_flag and not param.secondary_opts else param.default == option.cli_default
    ctx = cli.main.commands[command].make_context(command, ["digits-cnn", "-o", "out.onnx"])
    assert build_recipe(**{key: value for key, value in ctx.params.items() if key in {option.keyword for option in RECIPE_OPTIONS}}) == DEFAULT_RECIPE


def _choices(name: str) -> list[str]:
    (option,) = [p for p in cli.convert.params if p.name == name]
    return list(option.type.choices)


def test_cli_choices_are_the_enum_values():
    assert _choices("granularity") == [m.value for m in GranularityMode]
    assert _choices("calibration_method") == [m.value for m in CalibrationMethod]
    assert _choices("activation_quantizer") == [m.value for m in ActivationQuantizer]
    assert _choices("optimizer") == [m.value for m in Optimizer]
    assert _choices("device") == [m.value for m in Device]
    assert _choices("synthesizer") == [m.value for m in Synthesizer]
    assert _choices("profile") == list(PROFILES)
    static = [m.value.replace("_", "-") for m in Granularity if m is not Granularity.GRANULAR]
    assert _choices("weight_granularity") == _choices("act_granularity") == static


def test_cli_defaults_are_the_field_defaults():
    defaults = {p.name: p.default for p in cli.convert.params}
    assert defaults["granularity_budget"] == DEFAULT_RECIPE.granularity_budget
    assert defaults["calibration_method"] == DEFAULT_RECIPE.calibration_method
    assert defaults["weight_granularity"] == DEFAULT_RECIPE.weights.granularity.replace("_", "-")
    assert defaults["finetune_lr"] == DEFAULT_RECIPE.finetune.lr and defaults["samples"] == DEFAULT_RECIPE.synth.samples
    generator = DEFAULT_RECIPE.synth.generator
    assert (defaults["generator_steps"], defaults["generator_lr"], defaults["margin_low"], defaults["margin_high"]) == (
        generator.warmup_steps, generator.lr, generator.margin_low, generator.margin_high)


def test_synthesis_steps_default_to_more_below_8_bits_unless_given():
    assert build_recipe().synth.steps == DEFAULT_RECIPE.synth.steps == 20
    assert build_recipe(bits="W4A8").synth.steps == build_recipe(abits=6).synth.steps == LOW_BIT_SYNTH_STEPS
    assert build_recipe(mixed_precision_enabled=True, avg_wbits=4.0).synth.steps == LOW_BIT_SYNTH_STEPS
    assert build_recipe(bits="W4A8", synth_steps=20).synth.steps == 20
    assert build_recipe(bits="W8A8", synth_steps=7).synth.steps == 7
