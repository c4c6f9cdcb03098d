"""The accuracy gates of a conversion (``--min-agreement``, ``--max-drop``): which values they
take, what data they need, and whether a report passes them (exit 3 when not)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from zsq_onnx.errors import AccuracyGateError, BadInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gates:
    """Accuracy gates of a conversion (exit 3 when one fails): top-1 agreement with FP32 of at
    least ``min_agreement`` (a fraction), a top-1 drop of at most ``max_drop`` points (needs
    labelled evaluation data). Checked when made, so a conversion never starts with a gate
    that cannot be checked."""

    min_agreement: float | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise BadInputError(f"--min-agreement takes a fraction between 0 and 1 (0.95 for 95%), got {self.min_agreement}")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise BadInputError(f"--max-drop takes top-1 points between 0 and 100 (0.5 for half a point), got {self.max_drop}")

    def check_data(self, labelled: bool, where: str) -> None:
        """BadInputError when ``--max-drop`` is set and the evaluation set of ``where`` (the
        model) has no labels."""
        if self.max_drop is not None and not labelled:
            raise BadInputError(f"{where}: --max-drop compares top-1 on labelled images, and this model has no evaluation set of its own: add --eval-data DATA")


def check_gates(report: dict[str, Any], min_agreement: float | None, max_drop: float | None) -> None:
    """Raise AccuracyGateError (exit 3) when the quantized model misses a gate: agreement with
    FP32 below ``min_agreement`` (0..1), or top-1 lower than FP32 by more than ``max_drop`` points."""
    agreement = report["quantized"]["agreement"]
    if min_agreement is not None and agreement < min_agreement:
        raise AccuracyGateError(f"accuracy gate failed: agreement {agreement:.4f} < --min-agreement {min_agreement}")
    if max_drop is not None:
        fp32, quantized = report["fp32"]["top1"], report["quantized"]["top1"]
        if fp32 is None or quantized is None:
            raise BadInputError("--max-drop needs labelled evaluation data (--eval-data)")
        drop = 100 * (fp32 - quantized)
        if drop > max_drop:
            raise AccuracyGateError(f"accuracy gate failed: top-1 drop {drop:.2f} points > --max-drop {max_drop}")
