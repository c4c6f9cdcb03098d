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
from zsq_onnx.recipe import PROFILE_NAMES, QuantSpec, Recipe

INTEGER_DEPLOYMENT_RULES = ("weighted-op-input", "residual-add-input", "pool-input")


@dataclass(frozen=True)
class Profile:
    """A deployment target: the activation rules it needs and the quantizers it can run.

    ``all_readers``: each selected tensor is quantized once for all its readers, as integer
    deployments (and TensorRT's QDQ placement) expect."""

    name: str
    description: str
    rules: tuple[str, ...]
    use_4bit_types: bool
    integer_kernels: bool
    all_readers: bool
    symmetric_int8_only: bool = False

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
            notes.append("weights use ORT's 7-bit reduce_range" if recipe.reduce_range and recipe.weights.bits == 8 else
                         "weights use the full int8 range: on CPUs without VNNI fused QLinearConv can round differently from QDQ (--reduce-range avoids it)")
            if recipe.activations.bits < 8 or recipe.weights.bits < 8:
                notes.append("layers below 8 bits keep an 8-bit container with Clip and run as float QDQ, not as integer kernels")
        if recipe.activations.granularity == "per_channel":
            notes.append("per-channel activation scales run as float QDQ")
        if recipe.finetune.activation_quantizer == "adaptive":
            notes.append("adaptive (ASQ) activation quantizers scale their step per sample in the graph: their layers run as float QDQ")
        if recipe.granularity != "static":
            notes.append("granular activations compute their scales in the graph (per sample and channel): their layers run as float QDQ"
                         + ("; TensorRT and other integer-kernel targets cannot run in-graph dynamic scales as integer kernels" if self.integer_kernels else ""))
            if self.integer_kernels:
                notes.append("weights of layers with granular inputs are stored dequantized (float, exactly the quantized values) so ORT can pre-pack them")
        return notes

    def activation_4bit_types(self, recipe: Recipe) -> bool:
        """Whether 4-bit activations use uint4/int4: only beside 4-bit weights, since uint4
        activations feeding int8 weights make ORT fuse an invalid QLinearConv."""
        return self.use_4bit_types and recipe.weights.bits == 4

    def weight_spec(self, recipe: Recipe) -> QuantSpec:
        """The weight spec after the target's adjustments (ORT's 7-bit reduce_range)."""
        if recipe.reduce_range and recipe.weights.bits == 8:
            return dataclasses.replace(recipe.weights, bits=7)
        return recipe.weights


PROFILES = {
    "ort-cpu": Profile(
        "ort-cpu", "ONNX Runtime CPU: int8 per-channel weights, uint8 per-tensor activations, fused to QLinearConv/QLinearMatMul",
        INTEGER_DEPLOYMENT_RULES, use_4bit_types=False, integer_kernels=True, all_readers=True,
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
        ("weighted-op-input",), use_4bit_types=True, integer_kernels=False, all_readers=False,
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
    the layers an integer-kernel target runs in float, see FloatPathWeightsPass), and run the
    full checker."""
    target = get_profile(profile)
    lowered = apply_passes(
        model,
        InlinePass(),
        RemoveUnusedFunctionsPass(),
        FoldConstantsPass(kept_ops=KEPT_OPS - {"QuantizeLinear"}),
        RemoveUnusedNodesPass(),
        NameQuantizedWeightsPass(),
        *([FloatPathWeightsPass()] if target.integer_kernels else []),
        RemoveUnusedOpsetsPass(),
    )
    onnx.checker.check_model(lowered, full_check=True)
    return lowered
