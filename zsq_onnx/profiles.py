"""Deployment targets: which tensors get quantizers, what the target accepts, and emission.

Emission lowers the zsq functions to plain QuantizeLinear/(Clip)/DequantizeLinear, folds the
quantization of constant weights into integer initializers, and runs the full ONNX checker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import onnx
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from zsq_onnx.errors import BadInputError
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.float_path_weights import FloatPathWeightsPass
from zsq_onnx.passes.fold_constants import KEPT_OPS, FoldConstantsPass
from zsq_onnx.passes.name_quantized_weights import NameQuantizedWeightsPass
from zsq_onnx.passes.unsigned_weights import UnsignedWeightsPass
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import PROFILE_NAMES, Recipe

INTEGER_DEPLOYMENT_RULES = ("weighted-op-input", "residual-add-input", "pool-input", "pooled-reshape-input")


@dataclass(frozen=True)
class Profile:
    """A deployment target: the activation rules it needs and the quantizers it can run.

    ``all_readers``: each selected tensor is quantized once for all its readers, as integer
    deployments (and TensorRT's QDQ placement) expect. ``exact_on_any_cpu``: layers that ORT
    would fuse into integer kernels that saturate on x86 CPUs without VNNI store their weights as
    uint8 + 128, so the emitted model computes its QDQ graph at every ORT level on every CPU."""

    name: str
    description: str
    rules: tuple[str, ...]
    use_4bit_types: bool
    integer_kernels: bool
    all_readers: bool
    symmetric_int8_only: bool = False
    reduce_range_by_default: bool = False
    exact_on_any_cpu: bool = False

    def check(self, recipe: Recipe) -> None:
        """Raise BadInputError when ``recipe`` asks for quantizers this target cannot run."""
        if self.symmetric_int8_only and (recipe.granularity != "static" or recipe.finetune.activation_quantizer == "adaptive"):
            raise BadInputError(f"profile {self.name}: TensorRT cannot run in-graph dynamic scales (granular or adaptive activations) as integer kernels; "
                                "use --granularity static with static activation quantizers, or --profile ort-cpu/sim")
        if self.integer_kernels and recipe.activations.granularity == "per_channel":
            raise BadInputError(f"profile {self.name}: per-channel activation scales make ORT fuse QLinearConv/QLinearGlobalAveragePool kernels that reject them; "
                                "use --granularity granular or auto, or --profile sim")
        if not self.symmetric_int8_only:
            return
        weights, activations = recipe.weights, recipe.activations
        if weights.bits != 8 or activations.bits != 8 or not weights.symmetric or not activations.symmetric:
            raise BadInputError(f"profile {self.name} runs symmetric int8 only (zero points 0); got W{weights.bits}A{activations.bits} "
                                f"{'symmetric' if weights.symmetric else 'asymmetric'} weights, {'symmetric' if activations.symmetric else 'asymmetric'} activations")
        if activations.granularity != "per_tensor":
            raise BadInputError(f"profile {self.name} needs per-tensor activation scales")

    def notes(self, recipe: Recipe) -> list[str]:
        """What a user of this target should know about the emitted model."""
        notes = [self.description]
        if self.name == "ort-cpu":
            notes.append("8-bit weights use ORT's 7-bit reduce_range, exact in fused QLinearConv on every x86 CPU" if self.reduces_range(recipe) else
                         "8-bit weights use the full int8 range: on x86 CPUs without VNNI fused QLinearConv saturates and differs from QDQ (--reduce-range avoids it)")
            if recipe.activations.bits < 8 or recipe.weights.bits < 8:
                notes.append("layers below 8 bits keep an 8-bit container with Clip and run as float QDQ, not as integer kernels")
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
        """Whether 4-bit activations use uint4/int4: only beside 4-bit weights, since uint4
        activations feeding int8 weights make ORT fuse an invalid QLinearConv."""
        return self.use_4bit_types and recipe.weights.bits == 4

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


PROFILES = {
    "ort-cpu": Profile(
        "ort-cpu", "ONNX Runtime CPU: int8 per-channel weights, uint8 per-tensor activations, fused to QLinearConv/QLinearMatMul",
        INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=True, all_readers=True, reduce_range_by_default=True,
    ),
    "tensorrt": Profile(
        "tensorrt", "TensorRT: symmetric int8, zero points 0, constant scales, per-channel weights, per-tensor activations",
        INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=True, all_readers=True, symmetric_int8_only=True,
    ),
    "ort-cuda": Profile(
        "ort-cuda", "ONNX Runtime CUDA: as tensorrt; QDQ runs as float there (accuracy, not speed)",
        INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=False, all_readers=True, symmetric_int8_only=True,
    ),
    "sim": Profile(
        "sim", "bit-exact simulation: any bits and granularity, int4/uint4 types at 4 bits",
        ("weighted-op-input",), use_4bit_types=True, integer_kernels=False, all_readers=False, exact_on_any_cpu=True,
    ),
}
assert tuple(PROFILES) == PROFILE_NAMES


def get_profile(name: str) -> Profile:
    """The profile called ``name``."""
    if name not in PROFILES:
        raise BadInputError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def emit(model: onnx.ModelProto, profile: str = "ort-cpu") -> onnx.ModelProto:
    """Lower a model with zsq quantizers for ``profile``: inline the functions to QuantizeLinear/
    DequantizeLinear, store quantized weights as integer initializers (as dequantized floats for
    the layers an integer-kernel target runs in float, see FloatPathWeightsPass; on ``sim`` as
    uint8 where ORT would fuse saturating kernels, see UnsignedWeightsPass), and run the full
    checker."""
    target = get_profile(profile)
    lowered = apply_passes(
        model,
        InlinePass(),
        RemoveUnusedFunctionsPass(),
        FoldConstantsPass(kept_ops=KEPT_OPS - {"QuantizeLinear"}),
        RemoveUnusedNodesPass(),
        NameQuantizedWeightsPass(),
        *([FloatPathWeightsPass()] if target.integer_kernels else []),
        *([UnsignedWeightsPass()] if target.exact_on_any_cpu else []),
        RemoveUnusedOpsetsPass(),
    )
    onnx.checker.check_model(lowered, full_check=True)
    return lowered
