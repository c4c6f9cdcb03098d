"""The quantization recipe: frozen dataclasses with a versioned JSON round trip.

Each default is written once, on its dataclass field, and so is each command-line option: its
flag and help in the field's metadata (:mod:`zsq_onnx.recipe_flags`). :data:`RECIPE_OPTIONS`
collects them, with defaults from :data:`DEFAULT_RECIPE`, for :func:`build_recipe` and the CLI. The JSON form (``version`` :data:`RECIPE_VERSION`) is encoded
and decoded generically by walking the dataclass fields (:mod:`zsq_onnx.recipe_json`). The rules
that tie recipe choices to the profile's target live here too (checked once, in
:class:`Recipe`; notes for the user in :func:`target_notes`), so profiles never read a recipe.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from zsq_onnx.errors import BadInputError
from zsq_onnx.options import ActivationQuantizer, CalibrationMethod, Device, Granularity, GranularityMode, Optimizer, ReconstructMode, Synthesizer, WeightRounding
from zsq_onnx.profiles import ORT_CPU, PROFILES, Profile, get_profile
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe_flags import COMMA_INTEGERS, WHOLE, Flag, RecipeOption, Spelling, check_unique, dashed, declared_options, flag, replace_paths, rule_option, shared_flags
from zsq_onnx.recipe_json import decode, encode

logger = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 99.99
LOW_BIT_SYNTH_STEPS = 60
RECIPE_VERSION = 2
# What a version-1 recipe (no "version" key) meant by leaving out a field added later: it was
# written before that field existed, so it calibrated with min/max and corrected no biases.
VERSION_1_MEANINGS: dict[str, Any] = {"calibration_method": CalibrationMethod.MINMAX.value, "bias_correction": False}
# The static scales --weight-granularity and --act-granularity ask for (granular comes with --granularity).
STATIC_GRANULARITIES = dashed(member for member in Granularity if member is not Granularity.GRANULAR)
PROFILE_NAMES = Spelling(text=lambda profile: profile.name, parse=lambda value: value if isinstance(value, Profile) else get_profile(value), choices=tuple(PROFILES))


def _set_choice(instance: Any, name: str, choices: type[enum.StrEnum], flag: str) -> None:
    """Store field ``name`` of a frozen dataclass as its member of ``choices``, so strings given by
    the CLI or by callers become enum members; BadInputError listing the allowed values otherwise."""
    value = getattr(instance, name)
    try:
        object.__setattr__(instance, name, choices(value))
    except ValueError:
        raise BadInputError(f"unknown {flag} {value!r}; expected one of {', '.join(choices)}") from None


@dataclass(frozen=True)
class GeneratorConfig:
    """AdaDFQ's generator (:mod:`zsq_onnx.synth.adadfq`), with the defaults of its public code:
    Adam at ``lr`` (betas 0.5, 0.999) on batches of ``batch_size``; ``warmup_steps`` against the
    FP32 model alone before calibration (400 at 32 samples: the 4 warm-up epochs of 200 steps at
    16 samples there); during fine-tuning one generator step per student step.
    Loss weights: ``ce_weight`` (CE of P on y), ``bn_weight`` (BN statistics), ``disagreement_weight``
    and ``agreement_weight`` (CE of P - Q and P + Q on y), and the margin hinges at
    ``margin_low`` and ``margin_high`` of the normalized entropy of P - Q."""

    warmup_steps: int = field(default=400, metadata=flag("--generator-steps", "Generator: warm-up steps against the FP32 model before calibration.", synth="--generator-steps"))
    lr: float = field(default=1e-3, metadata=flag("--generator-lr", "Generator: Adam learning rate.", synth="--generator-lr"))
    batch_size: int = 32
    latent_dim: int = 100
    margin_low: float = field(default=0.1, metadata=flag("--margin-low", "Generator: lower margin bound (samples below it are too hard for Q)."))
    margin_high: float = field(default=0.8, metadata=flag("--margin-high", "Generator: upper margin bound on the normalized entropy of P - Q (samples above it are too easy for Q)."))
    disagreement_weight: float = 0.2
    agreement_weight: float = 0.1
    ce_weight: float = 1.0
    bn_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.warmup_steps >= 0 or not all(value > 0 for value in (self.lr, self.batch_size, self.latent_dim)):
            raise BadInputError(f"--generator-steps must be >= 0 and the generator's lr positive, got {self.warmup_steps} and {self.lr}")
        if not 0 <= self.margin_low < self.margin_high <= 1:
            raise BadInputError(f"the margin bounds need 0 <= --margin-low < --margin-high <= 1, got {self.margin_low} and {self.margin_high}")
        if not all(weight >= 0 for weight in (self.disagreement_weight, self.agreement_weight, self.ce_weight, self.bn_weight)):
            raise BadInputError("the generator's loss weights must be >= 0")


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic data: ZeroQ distillation settings, and the synthesizer that feeds fine-tuning.
    ZeroQ uses Adam at lr 0.5 for 500 steps on batches of 32-64; the default here (32 samples,
    20 steps) is what bench/w8a8_cifar.py and bench/efficientnet.py measured as enough for W8A8
    once inputs are optimized in natural-image units within the pixel range (see
    :func:`zsq_onnx.synth.distill.distill`; the README has the tables). Below 8 bits
    :func:`build_recipe` distills :data:`LOW_BIT_SYNTH_STEPS` unless told otherwise:
    bench/reconstruct.py measured Lite0 W4A8 8-10 points higher at 60 steps than at 20, and no
    gain from twice the samples. With ``synthesizer``
    ``generator`` an AdaDFQ generator (``generator``) makes the calibration inputs and the
    fine-tuning batches instead."""

    samples: int = field(default=32, metadata=flag("--samples", "Number of distilled calibration samples.", synth="--samples"))
    steps: int = field(default=20, metadata=flag(
        "--synth-steps", "Adam steps of ZeroQ distillation, per batch. Default: 20, or 60 when a width is below 8 bits or --mixed-precision searches.",
        synth="--steps", unset=True))
    batch_size: int = field(default=32, metadata=flag("--synth-batch-size", "Samples per distillation batch (BN statistics are matched per batch).", synth="--batch-size"))
    lr: float = field(default=0.5, metadata=flag("--synth-lr", "Adam learning rate on the inputs.", synth="--lr", convert=False))
    synthesizer: Synthesizer = field(default=Synthesizer.POOL, metadata=flag(
        "--synthesizer", "Fine-tuning data: a pool of ZeroQ-distilled inputs, or AdaDFQ's label-conditioned generator, "
                         "trained in turn with the quantized model (one generator step per fine-tuning step).", synth="--synthesizer"))
    generator: GeneratorConfig = field(default_factory=GeneratorConfig, metadata=WHOLE)

    def __post_init__(self) -> None:
        _set_choice(self, "synthesizer", Synthesizer, "--synthesizer")
        settings = {"samples": self.samples, "steps": self.steps, "batch size": self.batch_size, "lr": self.lr}
        if not all(value > 0 for value in settings.values()):
            raise BadInputError(f"synthesis settings must be positive, got {', '.join(f'{name} {value}' for name, value in settings.items())}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Torch-side fine-tuning of the quantized graph by KD from the FP32 graph on synthetic data.

    It runs when ``steps`` or ``minutes`` is set (both: whichever ends first). Step sizes learn
    with LSQ gradients (Adam at ``lr`` times each quantizer's initial scale, so the relative
    change is the same for every quantizer); weights learn at ``weight_lr`` with
    ``train_weights``; ``adaptive`` activation quantizers (ASQ) add a per-sample step adapter.
    ``samples`` distilled inputs form the pool, drawn with random flips and shifted crops.
    ``bn_loss`` > 0 adds that weight times the BN-statistics loss of the student: the batch
    statistics of each folded BatchNorm's output against the ones BN gives (mean beta, std
    |gamma| sqrt(var / (var + eps)))."""

    steps: int = field(default=0, metadata=flag("--finetune-steps", "KD fine-tuning steps of the quantized graph (0: none)."))
    minutes: float | None = field(default=None, metadata=flag("--finetune-minutes", "Fine-tune for this many minutes (with --finetune-steps: whichever ends first)."))
    lr: float = field(default=1e-2, metadata=flag("--finetune-lr", "Step-size learning rate, relative to each scale."))
    weight_lr: float = 1e-5
    train_weights: bool = field(default=False, metadata=flag("--train-weights", "Fine-tune weights and biases too (not only quantizer step sizes)."))
    optimizer: Optimizer = field(default=Optimizer.ADAM, metadata=flag("--optimizer"))
    batch_size: int = 32
    samples: int = field(default=256, metadata=flag("--finetune-samples", "Distilled samples in the fine-tuning pool."))
    temperature: float = 1.0
    bn_loss: float = field(default=0.0, metadata=flag("--finetune-bn-loss", "Weight of the BN-statistics loss added to KD (0: KD only)."))
    activation_quantizer: ActivationQuantizer = field(default=ActivationQuantizer.STATIC, metadata=flag(
        "--activation-quantizer", "adaptive: ASQ per-sample step adapters, trained by fine-tuning."))
    device: Device = field(default=Device.CPU, metadata=flag("--device", "Where fine-tuning runs."))

    def __post_init__(self) -> None:
        if not self.steps >= 0 or (self.minutes is not None and not self.minutes > 0):
            raise BadInputError(f"--finetune-steps must be >= 0 and --finetune-minutes > 0, got {self.steps} and {self.minutes}")
        _set_choice(self, "optimizer", Optimizer, "--optimizer")
        _set_choice(self, "activation_quantizer", ActivationQuantizer, "--activation-quantizer")
        _set_choice(self, "device", Device, "--device")
        if self.activation_quantizer == ActivationQuantizer.ADAPTIVE and not self.enabled:
            raise BadInputError("--activation-quantizer adaptive trains its adapters: add --finetune-steps N or --finetune-minutes M")
        if not all(value > 0 for value in (self.batch_size, self.samples, self.lr, self.weight_lr, self.temperature)):
            raise BadInputError("fine-tuning batch size, samples, learning rates and temperature must be positive")
        if not self.bn_loss >= 0:
            raise BadInputError(f"--finetune-bn-loss must be >= 0, got {self.bn_loss}")

    @property
    def enabled(self) -> bool:
        """Whether the recipe fine-tunes at all."""
        return self.steps > 0 or self.minutes is not None


@dataclass(frozen=True)
class ReconstructConfig:
    """How the reconstruction stage rounds the weights once their quantizers are in place (see
    :mod:`zsq_onnx.reconstruct`): ``weight_rounding`` nearest (no reconstruction), GPTQ (with
    ``damping``, a fraction of the Hessian's mean diagonal, and ``block_size``, columns updated
    together) or AdaRound (``iterations`` Adam steps per layer). ``mode`` ``block`` fits whole
    blocks instead (BRECQ/QDrop, see :mod:`zsq_onnx.reconstruct.block`): AdaRound rounding learned
    by the block's output error jointly with its activation steps, ``block_iterations`` Adam
    steps per block; it needs ``weight_rounding`` adaround, the rounding it learns."""

    weight_rounding: WeightRounding = field(default=WeightRounding.NEAREST, metadata=flag(
        "--weight-rounding", "Round weights to the nearest level, or by GPTQ or AdaRound: layer by layer, minimising the output error on the calibration inputs (uniform weights)."))
    damping: float = 0.01
    block_size: int = 128
    iterations: int = 1000
    mode: ReconstructMode = field(default=ReconstructMode.LAYER, metadata=flag(
        "--reconstruct", "What --weight-rounding fits at a time: each layer, or each block (BRECQ/QDrop, with --weight-rounding adaround: "
                         "residual blocks or MBConvs against the float model, activation steps learned jointly)."))
    block_iterations: int = 300

    def __post_init__(self) -> None:
        _set_choice(self, "weight_rounding", WeightRounding, "--weight-rounding")
        _set_choice(self, "mode", ReconstructMode, "--reconstruct")
        if self.mode == ReconstructMode.BLOCK and self.weight_rounding != WeightRounding.ADAROUND:
            raise BadInputError(f"--reconstruct block learns AdaRound's rounding of each block's weights: use it with --weight-rounding adaround, not {self.weight_rounding}")
        if self.block_iterations < 1:
            raise BadInputError(f"block reconstruction needs at least 1 iteration per block, got {self.block_iterations}")
        if not self.damping > 0 or self.block_size < 1 or self.iterations < 1:
            raise BadInputError(f"reconstruction damping must be > 0, block size and iterations >= 1, got {self.damping}, {self.block_size} and {self.iterations}")

    @property
    def enabled(self) -> bool:
        """Whether weights are rounded otherwise than to the nearest level."""
        return self.weight_rounding != WeightRounding.NEAREST


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """ZeroQ's data-free mixed precision: per-layer weight bits from ``weight_bits``, chosen on
    the Pareto frontier of weight size against sensitivity (KL divergence of the FP32 output from
    the output with only that layer quantized, on the synthetic data) under one budget:
    ``avg_wbits`` (average weight bits weighted by parameter count), ``size_budget_kb`` (weight
    storage) or ``bops_budget`` (giga bit-operations: MACs x weight bits x activation bits).
    ``search_activations`` also chooses per-layer activation bits from ``activation_bits``
    (``sim`` only), priced by BOPs."""

    enabled: bool = field(default=False, metadata=flag(
        "--mixed-precision", "ZeroQ mixed precision: per-layer weight bits on the Pareto frontier of size against sensitivity, within one budget.",
        keyword="mixed_precision_enabled"))
    weight_bits: tuple[int, ...] = field(default=(2, 3, 4, 5, 6, 8), metadata=flag(
        "--mp-weight-bits", "--mixed-precision: candidate weight bit widths, comma-separated.", spelling=COMMA_INTEGERS))
    activation_bits: tuple[int, ...] = (4, 8)
    search_activations: bool = field(default=False, metadata=flag(
        "--search-activations", f"--mixed-precision on sim: also choose each layer's input activation bits from {','.join(map(str, activation_bits))}, priced by BOPs."))
    avg_wbits: float | None = field(default=None, metadata=flag("--avg-wbits", "--mixed-precision budget: average weight bits, weighted by parameter count."))
    size_budget_kb: float | None = field(default=None, metadata=flag("--size-budget-kb", "--mixed-precision budget: weight storage in KiB."))
    bops_budget: float | None = field(default=None, metadata=flag("--bops-budget", "--mixed-precision budget: giga bit-operations (MACs x weight bits x activation bits)."))

    def __post_init__(self) -> None:
        if any(not 2 <= bits <= 8 for bits in (*self.weight_bits, *self.activation_bits)) or not self.weight_bits or not self.activation_bits:
            raise BadInputError(f"mixed-precision bit widths must be between 2 and 8, got weights {self.weight_bits}, activations {self.activation_bits}")
        object.__setattr__(self, "weight_bits", tuple(sorted(set(self.weight_bits))))
        object.__setattr__(self, "activation_bits", tuple(sorted(set(self.activation_bits))))
        budgets = {"--avg-wbits": self.avg_wbits, "--size-budget-kb": self.size_budget_kb, "--bops-budget": self.bops_budget}
        given = {flag: value for flag, value in budgets.items() if value is not None}
        if self.enabled and len(given) != 1:
            raise BadInputError(f"--mixed-precision needs exactly one budget of {', '.join(budgets)}; got {', '.join(given) or 'none'}")
        if not self.enabled and given:
            raise BadInputError(f"{', '.join(given)} budgets the mixed-precision search: add --mixed-precision")
        if not all(value > 0 for value in given.values()):
            raise BadInputError(f"mixed-precision budgets must be positive, got {given}")
        if self.search_activations and not self.enabled:
            raise BadInputError("--search-activations is part of the mixed-precision search: add --mixed-precision")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the quantized model; written into the report as JSON."""

    weights: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, Granularity.PER_CHANNEL), metadata=shared_flags(
        bits=Flag("--wbits", "Weight bits (overrides --bits).", unset=True),
        symmetric=Flag("--weight-symmetric/--weight-asymmetric"),
        granularity=Flag("--weight-granularity", spelling=STATIC_GRANULARITIES),
        levels=Flag("--weight-quantizer", "Weight levels: uniform QDQ (integer kernels), or ASQ's powers of sqrt(2) (post) or powers of two (pot) as k-bit codes "
                                          "into a lookup table (float kernels; first and last layers stay uniform with --keep-ends-8bit)."),
        weight_range=Flag("--weight-range", "Uniform weight ranges per channel (or tensor): the weight's min/max, or the clipping of it with the least squared rounding error (mse)."),
    ))
    activations: QuantSpec = field(default_factory=lambda: QuantSpec(8, False, Granularity.PER_TENSOR), metadata=shared_flags(
        bits=Flag("--abits", "Activation bits (overrides --bits).", unset=True),
        symmetric=Flag("--act-symmetric/--act-asymmetric", "Default: symmetric for tensorrt/ort-cuda, asymmetric otherwise.", unset=True),
        granularity=Flag("--act-granularity", "Static activation scales (with --granularity static).", spelling=STATIC_GRANULARITIES),
    ))
    profile: Profile = field(default=ORT_CPU, metadata=flag("--profile", "Deployment target.", spelling=PROFILE_NAMES))
    keep_ends_8bit: bool = field(default=True, metadata=flag("--keep-ends-8bit/--no-keep-ends-8bit", "First conv and last linear at 8 bits."))
    reduce_range: bool | None = field(default=None, metadata=flag(
        "--reduce-range/--no-reduce-range", "8-bit weights use 7 bits, as ORT's reduce_range: fused QLinearConv on x86 CPUs without VNNI saturates otherwise. "
                                            "Default: on for ort-cpu (use --no-reduce-range for VNNI or ARM targets), off elsewhere."))
    synth: SynthConfig = field(default_factory=SynthConfig)
    seed: int = field(default=0, metadata=flag("--seed", synth="--seed"))
    granularity: GranularityMode = field(default=GranularityMode.STATIC, metadata=flag(
        "--granularity", "Activations: calibrated static scales, GranQ per-sample per-channel scales computed in the graph, or a per-tensor choice."))
    granularity_budget: float = field(default=0.3, metadata=flag(
        "--granularity-budget", "auto: latency allowed over the slower of FP32 and the all-static graph at batch 64, as a fraction (0.3 = 1.3x)."))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata=WHOLE)
    # the default calibration method was chosen by bench/observers.py and bench/efficientnet.py --observers
    calibration_method: CalibrationMethod = field(default=CalibrationMethod.PERCENTILE, metadata=flag(
        "--calibration-method", "How static activation ranges are chosen on the calibration data: min/max, a percentile of |x| (or both tails), "
                                "least quantization MSE, or TensorRT's entropy (KL) calibration."))
    calibration_percentile: float = field(default=DEFAULT_PERCENTILE, metadata=flag("--calibration-percentile", "The percentile that --calibration-method percentile keeps."))
    bias_correction: bool = field(default=True, metadata=flag(
        "--bias-correction/--no-bias-correction", "Correct each Conv/Gemm bias, layer by layer, so its mean output on the calibration data is the FP32 one "
                                                  "(NNCF-style empirical bias correction)."))
    mixed_precision: MixedPrecisionConfig = field(default_factory=MixedPrecisionConfig, metadata=WHOLE)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            raise BadInputError(f"Recipe.profile takes a Profile value (zsq_onnx.profiles.PROFILES), got {self.profile!r}")
        _set_choice(self, "granularity", GranularityMode, "--granularity")
        _set_choice(self, "calibration_method", CalibrationMethod, "--calibration-method")
        if self.seed < 0:
            raise BadInputError(f"--seed takes a non-negative integer, got {self.seed}")
        if not self.granularity_budget >= 0:
            raise BadInputError(f"--granularity-budget must be a non-negative fraction of FP32 latency, got {self.granularity_budget}")
        if self.weights.granularity == Granularity.GRANULAR:
            raise BadInputError("granular quantization applies to activations only")
        if self.activations.lookup_table:
            raise BadInputError(f"{self.activations.levels} levels apply to weights only (a lookup table of constant weights)")
        if self.weights.lookup_table and self.mixed_precision.enabled:
            raise BadInputError(f"--mixed-precision searches uniform weight widths: use it without --weight-quantizer {self.weights.levels}")
        if (self.granularity == GranularityMode.STATIC) == (self.activations.granularity == Granularity.GRANULAR):
            raise BadInputError(f"--granularity {self.granularity} does not match activation granularity {self.activations.granularity}")
        if self.finetune.activation_quantizer == ActivationQuantizer.ADAPTIVE and self.granularity != GranularityMode.STATIC:
            raise BadInputError("--activation-quantizer adaptive replaces static per-tensor activation quantizers: use it with --granularity static")
        if not 50 < self.calibration_percentile <= 100:
            raise BadInputError(f"--calibration-percentile must be in (50, 100], got {self.calibration_percentile}")
        _check_target(self)

    @property
    def reduces_range(self) -> bool:
        """Whether 8-bit weights use 7 bits on this recipe's target (see :meth:`Profile.reduces_range`)."""
        return self.profile.reduces_range(self.reduce_range)

    @property
    def below_8_bits(self) -> bool:
        """Whether a weight or activation width is below 8 bits, or a mixed-precision search may
        choose one."""
        return self.weights.bits < 8 or self.activations.bits < 8 or self.mixed_precision.enabled

    @property
    def activation_rules(self) -> tuple[str, ...]:
        """Which activation uses get quantizers (see :meth:`Profile.activation_rules`)."""
        return self.profile.activation_rules(self.granularity)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, suitable for JSON: the fields (enums as their values) and ``version``."""
        return {"version": RECIPE_VERSION, **encode(self)}

    def to_json(self) -> str:
        """JSON text of the recipe."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`, for every version written so far. A missing key takes the
        field's default, except where a version-1 recipe meant something else by its absence
        (:data:`VERSION_1_MEANINGS`); an unknown key or a value of the wrong kind is a BadInputError."""
        if not isinstance(data, dict):
            raise BadInputError(f"a recipe is a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", 1)
        if version not in (1, RECIPE_VERSION):
            raise BadInputError(f"recipe version {version!r} is not one this zsq-onnx reads (1 to {RECIPE_VERSION})")
        if version == 1:
            logger.debug("recipe version 1: absent keys of later versions read as %s", {k: v for k, v in VERSION_1_MEANINGS.items() if k not in data})
            data = {**VERSION_1_MEANINGS, **data}
        return decode(cls, data, "")

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"a recipe is JSON text ({exc})") from None
        return cls.from_dict(data)


def _check_target(recipe: Recipe) -> None:
    """Raise BadInputError when ``recipe`` asks for quantizers its profile cannot run."""
    profile = recipe.profile
    if profile.refuses_dynamic_scales and (recipe.granularity != "static" or recipe.finetune.activation_quantizer == "adaptive"):
        raise BadInputError(f"profile {profile.name}: TensorRT cannot run in-graph dynamic scales (granular or adaptive activations) as integer kernels; "
                            "use --granularity static with static activation quantizers, or --profile ort-cpu/sim")
    if profile.integer_kernels and recipe.activations.granularity == "per_channel":
        raise BadInputError(f"profile {profile.name}: per-channel activation scales make ORT fuse QLinearConv/QLinearGlobalAveragePool kernels that reject them; "
                            "use --granularity granular or auto, or --profile sim")
    if recipe.mixed_precision.search_activations and (profile.integer_kernels or profile.symmetric_int8_only):
        raise BadInputError(f"profile {profile.name}: --search-activations chooses 4-bit activations per layer, which only --profile sim runs as such")
    if not profile.symmetric_int8_only:
        return
    if recipe.weights.lookup_table:
        raise BadInputError(f"profile {profile.name} runs int8 QDQ only: --weight-quantizer {recipe.weights.levels} needs --profile sim or ort-cpu")
    if recipe.mixed_precision.enabled:
        raise BadInputError(f"profile {profile.name} runs int8 only: --mixed-precision needs --profile sim or ort-cpu")
    weights, activations = recipe.weights, recipe.activations
    if weights.bits != 8 or activations.bits != 8 or not weights.symmetric or not activations.symmetric:
        raise BadInputError(f"profile {profile.name} runs symmetric int8 only (zero points 0); got W{weights.bits}A{activations.bits} "
                            f"{'symmetric' if weights.symmetric else 'asymmetric'} weights, {'symmetric' if activations.symmetric else 'asymmetric'} activations")
    if activations.granularity != "per_tensor":
        raise BadInputError(f"profile {profile.name} needs per-tensor activation scales")


def target_notes(recipe: Recipe) -> list[str]:
    """What a user of the recipe's profile should know about the emitted model."""
    profile = recipe.profile
    notes = [profile.description]
    if profile.reports_fusion:
        notes.append("8-bit weights use ORT's 7-bit reduce_range, exact in fused QLinearConv on every x86 CPU" if recipe.reduces_range else
                     "8-bit weights use the full int8 range: on x86 CPUs without VNNI fused QLinearConv saturates and differs from QDQ (--reduce-range avoids it)")
        if recipe.below_8_bits:
            notes.append("layers below 8 bits keep an 8-bit container with Clip and run as float QDQ, not as integer kernels")
    if recipe.mixed_precision.enabled:
        notes.append("mixed precision: weights at 2-4 bits are stored as int4, 5-7 bits in int8" if profile.use_4bit_types else
                     f"mixed precision: {profile.name} stores every weight width in an int8 container (its integer kernels take no int4), so sizes on disk do not shrink below 8 bits")
    if recipe.weights.lookup_table:
        container = f"uint{profile.weight_container_bits(recipe.weights.bits)}"
        notes.append(f"{recipe.weights.levels} weights are stored as {recipe.weights.bits}-bit codes ({container} on disk) into a table of "
                     f"{(1 << recipe.weights.bits) - 1} levels times a per-channel alpha, decoded by Gather once when ORT loads the model "
                     "(no QDQ kernel takes non-uniform levels): layers next to granular or adaptive activations run float kernels; "
                     "a layer between static activation quantizers is quantized again by ORT CPU itself (EXTENDED level and above) "
                     "to int8 per tensor and fused into an integer kernel, its levels rounded to that int8 step")
    if profile.exact_on_any_cpu:
        notes.append("int8 weights that ORT CPU would fuse into saturating u8 x s8 kernels (x86 without VNNI) are stored as uint8 + 128: "
                     "exact at every ORT level, at u8 x u8 kernel speed")
    if recipe.activations.granularity == "per_channel":
        notes.append("per-channel activation scales run as float QDQ")
    if recipe.finetune.activation_quantizer == "adaptive":
        notes.append("adaptive (ASQ) activation quantizers scale their step per sample in the graph: their layers run as float QDQ")
    if recipe.granularity != "static":
        notes.append("granular activations compute their scales in the graph (per sample and channel): their layers run as float QDQ"
                     + ("; activations are quantized where weighted layers read them, residual adds and pools run in float" if profile.rules != recipe.activation_rules else "")
                     + ("; TensorRT and other integer-kernel targets cannot run in-graph dynamic scales as integer kernels" if profile.integer_kernels else ""))
        if profile.integer_kernels:
            notes.append("weights of layers with granular inputs are stored dequantized (float, exactly the quantized values) so ORT can pre-pack them")
    return notes


DEFAULT_RECIPE = Recipe()


def parse_bits(text: str) -> tuple[int, int]:
    """Parse ``W4A8``-style text into (weight bits, activation bits)."""
    match = re.fullmatch(r"[Ww](\d)[Aa](\d)", text.strip())
    if match is None:
        raise BadInputError(f"--bits expects the form W<bits>A<bits> such as W8A8, got {text!r}")
    return int(match.group(1)), int(match.group(2))


BITS = rule_option(Flag("--bits", "Bit widths as W<w>A<a>, e.g. W8A8 or W4A8 (2-8 each)."), str)
RECIPE_OPTIONS: tuple[RecipeOption, ...] = (BITS, *declared_options(DEFAULT_RECIPE))
"""The keywords of :func:`build_recipe` and the recipe options of the CLI: --bits, then the
declarations on the fields (see :mod:`zsq_onnx.recipe_flags`), in field order. Where an option's
shape is not its field's, it says so in its declaration: --weight-granularity and
--act-granularity spell values with dashes (``STATIC_GRANULARITIES``), --profile by name,
--mp-weight-bits as a comma list; --mixed-precision has the keyword ``mixed_precision_enabled``
(``mixed_precision`` is the whole config); ``zsq-onnx synth`` names synthesis fields by
themselves (--steps, --lr, --batch-size). The rest of the shapes are the rules of
:func:`_shaped_changes`."""
check_unique(list(RECIPE_OPTIONS))
_BY_KEYWORD = {option.keyword: option for option in RECIPE_OPTIONS}
_WEIGHT_BITS, _ACTIVATION_BITS = ("weights", "bits"), ("activations", "bits")


def build_recipe(**options: Any) -> Recipe:
    """A Recipe from the keywords of :data:`RECIPE_OPTIONS`: each option as click names it
    (``weight_range`` for --weight-range, ``synth_steps`` for --synth-steps) with its command-line
    text or the field's value, and ``finetune``, ``mixed_precision`` and ``generator`` as whole
    configs that those options then change. A keyword left out or given as None keeps the
    field's default (``reduce_range`` None: the profile's, see
    :meth:`zsq_onnx.profiles.Profile.reduces_range`), except where a rule of
    :func:`_shaped_changes` decides; each config is built once, so its checks see all of its
    new values together."""
    unknown = [keyword for keyword in options if keyword not in _BY_KEYWORD]
    if unknown:
        raise TypeError(f"build_recipe() got an unexpected keyword argument {unknown[0]!r}")
    given = {keyword: value for keyword, value in options.items() if value is not None}
    changes = {_BY_KEYWORD[keyword].path: _BY_KEYWORD[keyword].parse(value) for keyword, value in given.items() if _BY_KEYWORD[keyword].path is not None}
    recipe = replace_paths(DEFAULT_RECIPE, changes | _shaped_changes(given, changes))
    if "synth_steps" not in given and recipe.below_8_bits:
        recipe = replace_paths(recipe, {("synth", "steps"): LOW_BIT_SYNTH_STEPS})
    logger.debug("recipe %s", recipe.to_json())
    return recipe


def _shaped_changes(given: dict[str, Any], changes: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], Any]:
    """The rules of the options whose command-line shape is not one field, by field path:
    --bits W<w>A<a> sets both bit widths, each unless --wbits or --abits gives it;
    --act-symmetric/--act-asymmetric left out follows the profile (symmetric for tensorrt and
    ort-cuda); --granularity granular or auto makes the activations granular whatever
    --act-granularity says (auto then chooses per tensor among per-tensor, per-channel and
    granular within --granularity-budget). --synth-steps left out is the field's 20, or
    :data:`LOW_BIT_SYNTH_STEPS` for a recipe :attr:`Recipe.below_8_bits` (see :func:`build_recipe`)."""
    shaped: dict[tuple[str, ...], Any] = {}
    if "bits" in given:
        weight_bits, activation_bits = parse_bits(given["bits"])
        shaped[_WEIGHT_BITS], shaped[_ACTIVATION_BITS] = changes.get(_WEIGHT_BITS, weight_bits), changes.get(_ACTIVATION_BITS, activation_bits)
    if "act_symmetric" not in given:
        shaped["activations", "symmetric"] = changes.get(("profile",), DEFAULT_RECIPE.profile).symmetric_activations_by_default
    if changes.get(("granularity",), DEFAULT_RECIPE.granularity) != GranularityMode.STATIC:
        shaped["activations", "granularity"] = Granularity.GRANULAR
    return shaped
