"""QuantSpec: how one kind of tensor is quantized (bits, symmetry, granularity)."""

from __future__ import annotations

from dataclasses import dataclass

from zsq_onnx.errors import BadInputError
from zsq_onnx.options import Granularity, WeightLevels, WeightRange


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized: bit width, symmetry, granularity and levels.

    ``granular`` (activations only) is GranQ's per-sample, per-channel range computed in the
    graph; it is always asymmetric over [min, max], so ``symmetric`` does not apply to it.
    ``levels`` other than uniform (weights only) are the symmetric lookup tables of
    :mod:`zsq_onnx.quantizers.lut`: at most 2^bits - 1 levels, one alpha per channel or tensor.
    ``weight_range`` (uniform weights only) says how the range is chosen, see
    :func:`zsq_onnx.quantizers.params.weight_range_params`."""

    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = Granularity.PER_TENSOR
    levels: WeightLevels = WeightLevels.UNIFORM
    weight_range: WeightRange = WeightRange.MINMAX

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise BadInputError(f"bit width must be between 2 and 8, got {self.bits}")
        try:
            object.__setattr__(self, "granularity", Granularity(self.granularity))
        except ValueError:
            raise BadInputError(f"unknown granularity {self.granularity!r}; expected one of {', '.join(Granularity)}") from None
        try:
            object.__setattr__(self, "levels", WeightLevels(self.levels))
        except ValueError:
            raise BadInputError(f"unknown weight quantizer {self.levels!r}; expected one of {', '.join(WeightLevels)}") from None
        try:
            object.__setattr__(self, "weight_range", WeightRange(self.weight_range))
        except ValueError:
            raise BadInputError(f"unknown weight range {self.weight_range!r}; expected one of {', '.join(WeightRange)}") from None
        if self.levels != WeightLevels.UNIFORM and not self.symmetric:
            raise BadInputError(f"{self.levels} weight levels are symmetric around 0: drop --weight-asymmetric")
        if self.levels != WeightLevels.UNIFORM and self.weight_range == WeightRange.MSE:
            raise BadInputError(f"--weight-range mse chooses uniform ranges; {self.levels} tables take their alpha from a percentile of |w|")

    @property
    def lookup_table(self) -> bool:
        """Whether the levels are a lookup table (codes, table, alpha) rather than uniform QDQ."""
        return self.levels != WeightLevels.UNIFORM

    @property
    def clips_weights(self) -> bool:
        """Whether a uniform weight range is searched for the least rounding error (see
        :class:`~zsq_onnx.options.WeightRange`) rather than the weight's min/max."""
        return self.weight_range == WeightRange.MSE

    @property
    def signed(self) -> bool:
        """Symmetric quantizers use a signed integer type, asymmetric ones an unsigned type."""
        return self.symmetric

    @property
    def qmin(self) -> int:
        """Smallest integer level."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest integer level."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1
