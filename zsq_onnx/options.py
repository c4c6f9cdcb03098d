"""The choice sets of the recipe and the CLI, each defined once as a StrEnum.

A member equals (and hashes as) its string value, so recipe JSON, dict lookups and comparisons
with plain strings keep working. Adding a choice means adding a member here: the recipe's
validation and the CLI's choices derive from these classes. A leaf module: it imports nothing
from zsq_onnx.
"""

from __future__ import annotations

import enum


class Granularity(enum.StrEnum):
    """How one tensor's quantization scale is shared."""

    PER_TENSOR = "per_tensor"
    """One scale (and zero point) for the whole tensor."""

    PER_CHANNEL = "per_channel"
    """One scale per channel: the output channel of a weight, axis 1 of an activation."""

    GRANULAR = "granular"
    """GranQ (activations only): a range per sample and channel, computed in the graph."""


class GranularityMode(enum.StrEnum):
    """How the recipe chooses activation granularity."""

    STATIC = "static"
    """Calibrated static scales, per tensor or per channel as the activation spec says."""

    GRANULAR = "granular"
    """GranQ quantizers on every quantized activation."""

    AUTO = "auto"
    """A choice per tensor among per-tensor, per-channel and granular within a latency budget."""


class ActivationQuantizer(enum.StrEnum):
    """The kind of static activation quantizer fine-tuning trains."""

    STATIC = "static"
    """A learned step size (LSQ), the same for every sample."""

    ADAPTIVE = "adaptive"
    """ASQ: the learned step times a per-sample factor from a small trained adapter."""


class Optimizer(enum.StrEnum):
    """The optimizer of fine-tuning."""

    ADAM = "adam"
    """Adam."""

    SGD = "sgd"
    """SGD with momentum."""


class CalibrationMethod(enum.StrEnum):
    """How static activation ranges are chosen on the calibration data."""

    MINMAX = "minmax"
    """The observed minimum and maximum."""

    PERCENTILE = "percentile"
    """A percentile of |x| (or of both tails), clipping rare outliers."""

    MSE = "mse"
    """The range of least quantization mean squared error."""

    ENTROPY = "entropy"
    """TensorRT's entropy (KL divergence) calibration."""


class Device(enum.StrEnum):
    """Where work runs: fine-tuning's torch device, evaluation's ONNX Runtime provider."""

    CPU = "cpu"
    """The CPU."""

    CUDA = "cuda"
    """The first CUDA device (torch's, or ORT's CUDA execution provider)."""


class WeightLevels(enum.StrEnum):
    """The levels a weight quantizer rounds to (``convert --weight-quantizer``)."""

    UNIFORM = "uniform"
    """Evenly spaced integer levels times a scale: QuantizeLinear/DequantizeLinear, integer kernels."""

    POST = "post"
    """ASQ's powers of sqrt(2), {0, +-alpha (sqrt 2)^-i}: k-bit codes and a lookup table, float kernels."""

    POT = "pot"
    """Powers of two, {0, +-alpha 2^-i}: k-bit codes and a lookup table, float kernels."""


class WeightRange(enum.StrEnum):
    """How a uniform weight quantizer's range is chosen per channel (``convert --weight-range``)."""

    MINMAX = "minmax"
    """The weight's own min/max: no weight is clipped (what ORT's quantizer stores)."""

    MSE = "mse"
    """The clipping of min/max (a shared ratio per channel, searched on a grid) with the least
    squared rounding error: a few outliers no longer coarsen the steps of every other weight."""


class Synthesizer(enum.StrEnum):
    """Where fine-tuning's inputs come from (``convert --synthesizer``)."""

    POOL = "pool"
    """A fixed pool of ZeroQ-distilled inputs, drawn with flips and shifted crops."""

    GENERATOR = "generator"
    """AdaDFQ: a label-conditioned generator, trained against the FP32 and the quantized model in turn with fine-tuning."""


class WeightRounding(enum.StrEnum):
    """How weights are rounded onto their quantizer's grid (``convert --weight-rounding``)."""

    NEAREST = "nearest"
    """To the nearest level, each weight on its own."""

    GPTQ = "gptq"
    """GPTQ: column by column, each rounding error spread over the columns not yet rounded so as to
    keep the layer's output on the calibration inputs (see :mod:`zsq_onnx.reconstruct`)."""

    ADAROUND = "adaround"
    """AdaRound: each weight to the level below or above it, learned per layer (torch, on the layer
    alone) to keep its output on the calibration inputs."""


class ReconstructMode(enum.StrEnum):
    """What the reconstruction stage fits at a time (``convert --reconstruct``)."""

    LAYER = "layer"
    """Each weighted layer on its own, by its output error (GPTQ or AdaRound, in numpy)."""

    BLOCK = "block"
    """BRECQ/QDrop: a residual block or MBConv (the layers between two single-tensor cuts of the
    graph) as a unit, by its output error against the float model: AdaRound rounding of its
    weights and the steps of its static activation quantizers learned jointly (torch), with
    QDrop's random dropping of activation quantization."""
