"""The quantization recipe: frozen dataclasses with a JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from zsq_onnx.errors import BadInputError
from zsq_onnx.profiles import ORT_CPU, Profile, get_profile
from zsq_onnx.quantizers.spec import Granularity, QuantSpec

GranularityMode = Literal["static", "granular", "auto"]
GRANULARITY_MODES: tuple[str, ...] = ("static", "granular", "auto")
CalibrationMethod = Literal["minmax", "percentile", "mse", "entropy"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "mse", "entropy")
DEFAULT_PERCENTILE = 99.99
# Defaults chosen by bench/observers.py and bench/efficientnet.py --observers (README tables).
DEFAULT_CALIBRATION_METHOD = "percentile"


@dataclass(frozen=True)
class SynthConfig:
    """ZeroQ distillation settings. ZeroQ uses Adam at lr 0.5 for 500 steps on batches of 32-64;
    the default here (32 samples, 20 steps) is what bench/w8a8_cifar.py and bench/efficientnet.py
    measured as enough for W8A8 once inputs are optimized in natural-image units within the
    pixel range (see :func:`zsq_onnx.synth.distill.distill`; the README has the tables)."""

    samples: int = 32
    steps: int = 20
    batch_size: int = 32
    lr: float = 0.5


ActivationQuantizer = Literal["static", "adaptive"]


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

    steps: int = 0
    minutes: float | None = None
    lr: float = 1e-2
    weight_lr: float = 1e-5
    train_weights: bool = False
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = 32
    samples: int = 256
    temperature: float = 1.0
    bn_loss: float = 0.0
    activation_quantizer: ActivationQuantizer = "static"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 0 or (self.minutes is not None and self.minutes <= 0):
            raise BadInputError(f"--finetune-steps must be >= 0 and --finetune-minutes > 0, got {self.steps} and {self.minutes}")
        if self.optimizer not in ("adam", "sgd"):
            raise BadInputError(f"unknown optimizer {self.optimizer!r}; expected adam or sgd")
        if self.activation_quantizer not in ("static", "adaptive"):
            raise BadInputError(f"unknown --activation-quantizer {self.activation_quantizer!r}; expected static or adaptive")
        if self.activation_quantizer == "adaptive" and not self.enabled:
            raise BadInputError("--activation-quantizer adaptive trains its adapters: add --finetune-steps N or --finetune-minutes M")
        if min(self.batch_size, self.samples) <= 0 or min(self.lr, self.weight_lr, self.temperature) <= 0:
            raise BadInputError("fine-tuning batch size, samples, learning rates and temperature must be positive")
        if not self.bn_loss >= 0:
            raise BadInputError(f"--finetune-bn-loss must be >= 0, got {self.bn_loss}")
        if self.device not in ("cpu", "cuda"):
            raise BadInputError(f"--device must be cpu or cuda, got {self.device!r}")

    @property
    def enabled(self) -> bool:
        """Whether the recipe fine-tunes at all."""
        return self.steps > 0 or self.minutes is not None


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the quantized model; written into the report as JSON."""

    weights: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, "per_channel"))
    activations: QuantSpec = field(default_factory=lambda: QuantSpec(8, False, "per_tensor"))
    profile: Profile = ORT_CPU
    keep_ends_8bit: bool = True
    reduce_range: bool | None = None
    synth: SynthConfig = field(default_factory=SynthConfig)
    seed: int = 0
    granularity: GranularityMode = "static"
    granularity_budget: float = 0.3
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    calibration_method: CalibrationMethod = DEFAULT_CALIBRATION_METHOD
    calibration_percentile: float = DEFAULT_PERCENTILE
    bias_correction: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            raise BadInputError(f"Recipe.profile takes a Profile value (zsq_onnx.profiles.PROFILES), got {self.profile!r}")
        if self.granularity not in GRANULARITY_MODES:
            raise BadInputError(f"unknown --granularity {self.granularity!r}; expected one of {', '.join(GRANULARITY_MODES)}")
        if not self.granularity_budget >= 0:
            raise BadInputError(f"--granularity-budget must be a non-negative fraction of FP32 latency, got {self.granularity_budget}")
        if self.weights.granularity == "granular":
            raise BadInputError("granular quantization applies to activations only")
        if (self.granularity == "static") == (self.activations.granularity == "granular"):
            raise BadInputError(f"--granularity {self.granularity} does not match activation granularity {self.activations.granularity}")
        if self.finetune.activation_quantizer == "adaptive" and self.granularity != "static":
            raise BadInputError("--activation-quantizer adaptive replaces static per-tensor activation quantizers: use it with --granularity static")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise BadInputError(f"unknown --calibration-method {self.calibration_method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
        if not 50 < self.calibration_percentile <= 100:
            raise BadInputError(f"--calibration-percentile must be in (50, 100], got {self.calibration_percentile}")
        self.profile.check(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, suitable for JSON (the profile by name)."""
        return {**dataclasses.asdict(self), "profile": self.profile.name}

    def to_json(self) -> str:
        """JSON text of the recipe."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(
            weights=QuantSpec(**data["weights"]),
            activations=QuantSpec(**data["activations"]),
            profile=get_profile(data["profile"]),
            keep_ends_8bit=data.get("keep_ends_8bit", True),
            reduce_range=data.get("reduce_range"),
            synth=SynthConfig(**data["synth"]),
            seed=data["seed"],
            granularity=data.get("granularity", "static"),
            granularity_budget=data.get("granularity_budget", 0.3),
            finetune=FinetuneConfig(**data.get("finetune", {})),
            calibration_method=data.get("calibration_method", "minmax"),  # what recipes before observers calibrated with
            calibration_percentile=data.get("calibration_percentile", DEFAULT_PERCENTILE),
            bias_correction=data.get("bias_correction", False),
        )

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def parse_bits(text: str) -> tuple[int, int]:
    """Parse ``W4A8``-style text into (weight bits, activation bits)."""
    match = re.fullmatch(r"[Ww](\d)[Aa](\d)", text.strip())
    if match is None:
        raise BadInputError(f"--bits expects the form W<bits>A<bits> such as W8A8, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def build_recipe(
    bits: str | None = None,
    wbits: int | None = None,
    abits: int | None = None,
    profile: str = "ort-cpu",
    weight_symmetric: bool = True,
    weight_granularity: Granularity = "per_channel",
    act_symmetric: bool | None = None,
    act_granularity: Granularity = "per_tensor",
    keep_ends_8bit: bool = True,
    reduce_range: bool | None = None,
    samples: int | None = None,
    synth_steps: int | None = None,
    synth_lr: float | None = None,
    synth_batch_size: int | None = None,
    seed: int = 0,
    granularity: GranularityMode = "static",
    granularity_budget: float = 0.3,
    finetune: FinetuneConfig | None = None,
    calibration_method: CalibrationMethod = DEFAULT_CALIBRATION_METHOD,
    calibration_percentile: float = DEFAULT_PERCENTILE,
    bias_correction: bool = True,
) -> Recipe:
    """A Recipe from CLI-style options; unset ones keep their defaults (W8A8, activations
    symmetric for the TensorRT-style profiles and asymmetric otherwise; ``reduce_range`` None:
    the profile's default, see :meth:`zsq_onnx.profiles.Profile.reduces_range`). ``granularity``
    ``granular`` and ``auto`` replace ``act_granularity`` (auto chooses per tensor among
    per-tensor, per-channel and granular within ``granularity_budget``). ``calibration_method``
    chooses static activation ranges (see :mod:`zsq_onnx.plan.observers`; ``calibration_percentile``
    for ``percentile``); ``bias_correction`` corrects each Conv/Gemm bias, layer by layer, for the
    mean shift quantization causes at its output (see :mod:`zsq_onnx.plan.sequential_bias`)."""
    weight_bits, activation_bits = parse_bits(bits) if bits else (8, 8)
    weight_bits, activation_bits = wbits or weight_bits, abits or activation_bits
    target = get_profile(profile)
    if act_symmetric is None:
        act_symmetric = target.symmetric_activations_by_default
    overrides = {"samples": samples, "steps": synth_steps, "lr": synth_lr, "batch_size": synth_batch_size}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if any(value <= 0 for value in overrides.values()):
        raise BadInputError(f"synthesis settings must be positive, got {overrides}")
    return Recipe(
        weights=QuantSpec(weight_bits, weight_symmetric, weight_granularity),
        activations=QuantSpec(activation_bits, act_symmetric, act_granularity if granularity == "static" else "granular"),
        profile=target,
        keep_ends_8bit=keep_ends_8bit,
        reduce_range=reduce_range,
        synth=dataclasses.replace(SynthConfig(), **overrides),
        seed=seed,
        granularity=granularity,
        granularity_budget=granularity_budget,
        finetune=finetune or FinetuneConfig(),
        calibration_method=calibration_method,
        calibration_percentile=calibration_percentile,
        bias_correction=bias_correction,
    )
