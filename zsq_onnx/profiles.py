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

import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from zsq_onnx.errors import BadInputError
from zsq_onnx.options import GranularityMode
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.float_path_weights import FloatPathWeightsPass
from zsq_onnx.passes.fold_constants import KEPT_OPS, FoldConstantsPass
from zsq_onnx.passes.lut_weights import LutWeightsPass
from zsq_onnx.passes.name_quantized_weights import NameQuantizedWeightsPass
from zsq_onnx.passes.narrow_weights import NarrowWeightContainersPass
from zsq_onnx.passes.unsigned_weights import UnsignedWeightsPass
from zsq_onnx.quantizers.spec import QuantSpec

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

    def activation_rules(self, granularity: GranularityMode) -> tuple[str, ...]:
        """Which activation uses get quantizers: the target's rules for static activations; only
        weighted-op inputs (as GranQ places them) for granular and auto, since the residual adds
        and pools that integer targets also quantize run in float next to granular layers anyway,
        where a quantizer would cost time and accuracy and buy no integer kernel."""
        if granularity == GranularityMode.STATIC:
            return self.rules
        return tuple(rule for rule in self.rules if rule == "weighted-op-input")

    def routes_all_readers(self, activations: QuantSpec) -> bool:
        """Whether every reader of a quantized activation reads its quantized form (see
        ``all_readers``): only for unsigned activations, since ORT CPU (1.32, EXTENDED level and
        above) fails to load int8 activations that a Slice or Pad reads through a
        DequantizeLinear (its QDQ propagation then meets its int8-to-uint8 conversion); with
        int8 activations such readers read the float tensor, as TensorRT's placement expects."""
        return self.all_readers and not activations.signed

    def activation_4bit_types(self, weight_bits: int, mixed_precision: bool) -> bool:
        """Whether 4-bit activations use uint4/int4: only beside 4-bit weights everywhere, since
        uint4 activations feeding int8 weights make ORT fuse an invalid QLinearConv (so not under
        mixed precision, where a layer may keep 8-bit weights)."""
        return self.use_4bit_types and weight_bits == 4 and not mixed_precision

    def reduces_range(self, requested: bool | None) -> bool:
        """Whether 8-bit weights use 7 bits (ORT's reduce_range): as ``requested`` (the recipe's
        choice), else by default on the target whose integer kernels saturate int16 pair sums on
        x86 without VNNI."""
        return requested if requested is not None else self.reduce_range_by_default

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


def at_reduced_range(spec: QuantSpec) -> QuantSpec:
    """A weight spec as ORT's reduce_range stores it: 8 bits at 7, other widths unchanged (for a
    target and recipe that reduce range, see :meth:`Profile.reduces_range`)."""
    return dataclasses.replace(spec, bits=7) if spec.bits == 8 else spec


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
