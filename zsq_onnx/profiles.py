"""Deployment targets as values: which tensors get quantizers, what the target accepts, and
the passes that lower a quantized model for it.

A name becomes a :class:`Profile` only where it enters (the CLI, recipe JSON, a model's
metadata); everything else holds the value. :func:`quantize <zsq_onnx.pipeline.quantize>` records
the profile in the model's metadata, so :func:`emit` lowers a model for the target it was planned
for. Emission inlines the zsq functions to plain QuantizeLinear/(Clip)/DequantizeLinear, folds
the quantization of constant weights into integer initializers, and runs the full ONNX checker.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from zsq_onnx.errors import BadInputError
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.float_path_weights import FloatPathWeightsPass
from zsq_onnx.passes.fold_constants import KEPT_OPS, FoldConstantsPass
from zsq_onnx.passes.lut_weights import LutWeightsPass
from zsq_onnx.passes.name_quantized_weights import NameQuantizedWeightsPass
from zsq_onnx.passes.narrow_weights import NarrowWeightContainersPass
from zsq_onnx.passes.unsigned_weights import UnsignedWeightsPass
from zsq_onnx.quantizers.spec import QuantSpec

if TYPE_CHECKING:
    from zsq_onnx.recipe import Recipe

logger = logging.getLogger(__name__)

METADATA_KEY = "zsq.profile"
INTEGER_DEPLOYMENT_RULES = ("weighted-op-input", "residual-add-input", "pool-input", "pooled-reshape-input")


@dataclass(frozen=True)
class Profile:
    """A deployment target: the activation rules it needs, the quantizers it can run, and how
    a model is lowered for it.

    ``rules``: which activation uses get quantizers (see :mod:`zsq_onnx.plan.targets`).
    ``use_4bit_types``: 4-bit levels are stored as int4/uint4 (otherwise an 8-bit container).
    ``integer_kernels``: the target runs its QDQ pairs as integer kernels, so a layer it must run
    in float (next to a dynamic scale) stores its weights dequantized.
    ``all_readers``: each selected tensor is quantized once for all its readers, as integer
    deployments (and TensorRT's QDQ placement) expect.
    ``symmetric_int8_only``: int8 with zero points 0 only, constant scales (no granular or
    adaptive activations); activations then default to symmetric.
    ``reduce_range_by_default``: 8-bit weights use 7 bits unless the recipe says otherwise.
    ``exact_on_any_cpu``: layers that ORT would fuse into integer kernels that saturate on x86
    CPUs without VNNI store their weights as uint8 + 128, so the emitted model computes its QDQ
    graph at every ORT level on every CPU.
    ``reports_fusion``: ORT CPU fuses the emitted graph into integer kernels; the report counts
    the layers it fused and notes the 8-bit weight range chosen."""

    name: str
    description: str
    rules: tuple[str, ...]
    use_4bit_types: bool
    integer_kernels: bool
    all_readers: bool
    symmetric_int8_only: bool = False
    reduce_range_by_default: bool = False
    exact_on_any_cpu: bool = False
    reports_fusion: bool = False

    @property
    def symmetric_activations_by_default(self) -> bool:
        """Whether activations are symmetric (signed, zero point 0) unless the recipe says otherwise."""
        return self.symmetric_int8_only

    @property
    def refuses_dynamic_scales(self) -> bool:
        """Whether the target refuses in-graph dynamic scales (granular or adaptive activations)."""
        return self.symmetric_int8_only

    def check(self, recipe: Recipe) -> None:
        """Raise BadInputError when ``recipe`` asks for quantizers this target cannot run."""
        if self.refuses_dynamic_scales and (recipe.granularity != "static" or recipe.finetune.activation_quantizer == "adaptive"):
            raise BadInputError(f"profile {self.name}: TensorRT cannot run in-graph dynamic scales (granular or adaptive activations) as integer kernels; "
                                "use --granularity static with static activation quantizers, or --profile ort-cpu/sim")
        if self.integer_kernels and recipe.activations.granularity == "per_channel":
            raise BadInputError(f"profile {self.name}: per-channel activation scales make ORT fuse QLinearConv/QLinearGlobalAveragePool kernels that reject them; "
                                "use --granularity granular or auto, or --profile sim")
        if recipe.mixed_precision.search_activations and (self.integer_kernels or self.symmetric_int8_only):
            raise BadInputError(f"profile {self.name}: --search-activations chooses 4-bit activations per layer, which only --profile sim runs as such")
        if not self.symmetric_int8_only:
            return
        if recipe.weights.lookup_table:
            raise BadInputError(f"profile {self.name} runs int8 QDQ only: --weight-quantizer {recipe.weights.levels} needs --profile sim or ort-cpu")
        if recipe.mixed_precision.enabled:
            raise BadInputError(f"profile {self.name} runs int8 only: --mixed-precision needs --profile sim or ort-cpu")
        weights, activations = recipe.weights, recipe.activations
        if weights.bits != 8 or activations.bits != 8 or not weights.symmetric or not activations.symmetric:
            raise BadInputError(f"profile {self.name} runs symmetric int8 only (zero points 0); got W{weights.bits}A{activations.bits} "
                                f"{'symmetric' if weights.symmetric else 'asymmetric'} weights, {'symmetric' if activations.symmetric else 'asymmetric'} activations")
        if activations.granularity != "per_tensor":
            raise BadInputError(f"profile {self.name} needs per-tensor activation scales")

    def notes(self, recipe: Recipe) -> list[str]:
        """What a user of this target should know about the emitted model."""
        notes = [self.description]
        if self.reports_fusion:
            notes.append("8-bit weights use ORT's 7-bit reduce_range, exact in fused QLinearConv on every x86 CPU" if self.reduces_range(recipe) else
                         "8-bit weights use the full int8 range: on x86 CPUs without VNNI fused QLinearConv saturates and differs from QDQ (--reduce-range avoids it)")
            if recipe.activations.bits < 8 or recipe.weights.bits < 8 or recipe.mixed_precision.enabled:
                notes.append("layers below 8 bits keep an 8-bit container with Clip and run as float QDQ, not as integer kernels")
        if recipe.mixed_precision.enabled:
            notes.append("mixed precision: weights at 2-4 bits are stored as int4, 5-7 bits in int8" if self.use_4bit_types else
                         f"mixed precision: {self.name} stores every weight width in an int8 container (its integer kernels take no int4), so sizes on disk do not shrink below 8 bits")
        if recipe.weights.lookup_table:
            container = f"uint{self.weight_container_bits(recipe.weights.bits)}"
            notes.append(f"{recipe.weights.levels} weights are stored as {recipe.weights.bits}-bit codes ({container} on disk) into a table of "
                         f"{(1 << recipe.weights.bits) - 1} levels times a per-channel alpha, decoded by Gather once when ORT loads the model "
                         "(no QDQ kernel takes non-uniform levels): layers next to granular or adaptive activations run float kernels; "
                         "a layer between static activation quantizers is quantized again by ORT CPU itself (EXTENDED level and above) "
                         "to int8 per tensor and fused into an integer kernel, its levels rounded to that int8 step")
        if self.exact_on_any_cpu:
            notes.append("int8 weights that ORT CPU would fuse into saturating u8 x s8 kernels (x86 without VNNI) are stored as uint8 + 128: "
                         "exact at every ORT level, at u8 x u8 kernel speed")
        if recipe.activations.granularity == "per_channel":
            notes.append("per-channel activation scales run as float QDQ")
        if recipe.finetune.activation_quantizer == "adaptive":
            notes.append("adaptive (ASQ) activation quantizers scale their step per sample in the graph: their layers run as float QDQ")
        if recipe.granularity != "static":
            notes.append("granular activations compute their scales in the graph (per sample and channel): their layers run as float QDQ"
                         + ("; activations are quantized where weighted layers read them, residual adds and pools run in float" if self.rules != self.activation_rules(recipe) else "")
                         + ("; TensorRT and other integer-kernel targets cannot run in-graph dynamic scales as integer kernels" if self.integer_kernels else ""))
            if self.integer_kernels:
                notes.append("weights of layers with granular inputs are stored dequantized (float, exactly the quantized values) so ORT can pre-pack them")
        return notes

    def activation_rules(self, recipe: Recipe) -> tuple[str, ...]:
        """Which activation uses get quantizers: the target's rules for static activations; only
        weighted-op inputs (as GranQ places them) for granular and auto, since the residual adds
        and pools that integer targets also quantize run in float next to granular layers anyway,
        where a quantizer would cost time and accuracy and buy no integer kernel."""
        if recipe.granularity == "static":
            return self.rules
        return tuple(rule for rule in self.rules if rule == "weighted-op-input")

    def routes_all_readers(self, recipe: Recipe) -> bool:
        """Whether every reader of a quantized activation reads its quantized form (see
        ``all_readers``): only for unsigned activations, since ORT CPU (1.32, EXTENDED level and
        above) fails to load int8 activations that a Slice or Pad reads through a
        DequantizeLinear (its QDQ propagation then meets its int8-to-uint8 conversion); with
        int8 activations such readers read the float tensor, as TensorRT's placement expects."""
        return self.all_readers and not recipe.activations.signed

    def activation_4bit_types(self, recipe: Recipe) -> bool:
        """Whether 4-bit activations use uint4/int4: only beside 4-bit weights everywhere, since
        uint4 activations feeding int8 weights make ORT fuse an invalid QLinearConv (so not under
        mixed precision, where a layer may keep 8-bit weights)."""
        return self.use_4bit_types and recipe.weights.bits == 4 and not recipe.mixed_precision.enabled

    def reduces_range(self, recipe: Recipe) -> bool:
        """Whether 8-bit weights use 7 bits (ORT's reduce_range): as the recipe says, else by
        default on the target whose integer kernels saturate int16 pair sums on x86 without VNNI."""
        return recipe.reduce_range if recipe.reduce_range is not None else self.reduce_range_by_default

    def target_weights(self, weights: dict[str, QuantSpec], recipe: Recipe) -> dict[str, QuantSpec]:
        """Weight specs per node after the target's adjustments: every 8-bit spec (the 8-bit ends
        included) at 7 bits where the target reduces range."""
        if not self.reduces_range(recipe):
            return weights
        return {node: dataclasses.replace(spec, bits=7) if spec.bits == 8 else spec for node, spec in weights.items()}


    def emit_passes(self) -> list[ir.passes.PassBase]:
        """The passes that lower a model with zsq quantizers for this target: store lookup-table
        weights as codes decoded by Gather (LutWeightsPass), inline the functions to
        QuantizeLinear/DequantizeLinear, store quantized weights as integer initializers (as
        dequantized floats for the layers an integer-kernel target runs in float, see
        FloatPathWeightsPass; as uint8 where ORT would fuse saturating kernels, see
        UnsignedWeightsPass), and run the full checker."""
        return [
            LutWeightsPass(self.use_4bit_types),
            InlinePass(),
            RemoveUnusedFunctionsPass(),
            FoldConstantsPass(kept_ops=KEPT_OPS - {"QuantizeLinear"}),
            RemoveUnusedNodesPass(),
            NameQuantizedWeightsPass(),
            *([NarrowWeightContainersPass()] if self.use_4bit_types else []),
            *([FloatPathWeightsPass()] if self.integer_kernels else []),
            *([UnsignedWeightsPass()] if self.exact_on_any_cpu else []),
            RemoveUnusedOpsetsPass(),
            CheckerPass(full_check=True),
        ]

    def weight_container_bits(self, bits: int) -> int:
        """The bits a ``bits``-bit integer weight occupies on disk for this target: 4 (int4/uint4)
        for 2-4 bits where it loads 4-bit types, else an 8-bit container."""
        return 4 if bits <= 4 and self.use_4bit_types else 8

    def record(self, model: ir.Model) -> None:
        """Record in ``model``'s metadata that it is planned for this target (read by :func:`emit`)."""
        model.metadata_props[METADATA_KEY] = self.name


ORT_CPU = Profile(
    "ort-cpu", "ONNX Runtime CPU: int8 per-channel weights, uint8 per-tensor activations, fused to QLinearConv/QLinearMatMul",
    INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=True, all_readers=True, reduce_range_by_default=True, reports_fusion=True,
)
TENSORRT = Profile(
    "tensorrt", "TensorRT: symmetric int8, zero points 0, constant scales, per-channel weights, per-tensor activations",
    INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=True, all_readers=True, symmetric_int8_only=True,
)
ORT_CUDA = Profile(
    "ort-cuda", "ONNX Runtime CUDA: as tensorrt; QDQ runs as float there (accuracy, not speed)",
    INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=False, all_readers=True, symmetric_int8_only=True,
)
SIM = Profile(
    "sim", "bit-exact simulation: any bits and granularity, int4/uint4 types at 4 bits",
    ("weighted-op-input",), use_4bit_types=True, integer_kernels=False, all_readers=False, exact_on_any_cpu=True,
)
PROFILES: dict[str, Profile] = {profile.name: profile for profile in (ORT_CPU, TENSORRT, ORT_CUDA, SIM)}


def get_profile(name: str) -> Profile:
    """The profile called ``name``: for the edges where a name enters (CLI, recipe JSON, model metadata)."""
    if name not in PROFILES:
        raise BadInputError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def recorded_profile(model: ir.Model) -> Profile:
    """The profile ``model`` was quantized for (see :meth:`Profile.record`)."""
    name = model.metadata_props.get(METADATA_KEY)
    if name is None:
        raise BadInputError(f"model {model.graph.name!r} records no {METADATA_KEY}: quantize it with zsq-onnx first, which records its deployment profile")
    return get_profile(name)


def emit(model: ir.Model) -> ir.Model:
    """Lower a model with zsq quantizers for the profile it was quantized for (see
    :meth:`Profile.emit_passes`)."""
    profile = recorded_profile(model)
    logger.info("emitting %s for %s", model.graph.name, profile.name)
    return apply_passes(model, *profile.emit_passes())
