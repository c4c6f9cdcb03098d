"""Fine-tuning's schedule: when training ends (after its steps or its minutes, whichever comes
first) and the cosine learning rate over the fraction of training done."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from zsq_onnx.recipe import FinetuneConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Training ends after ``steps`` steps (None: no limit) or ``seconds`` of training, whichever
    comes first; the learning rate decays from each group's base to zero along a half cosine."""

    steps: int | None
    seconds: float

    @classmethod
    def of(cls, config: FinetuneConfig) -> Schedule:
        """The schedule ``config`` asks for (``steps`` 0 or ``minutes`` None: no limit of that kind)."""
        return cls(config.steps if config.steps > 0 else None, config.minutes * 60 if config.minutes is not None else math.inf)

    def position(self, step: int, elapsed: float) -> list[float]:
        """[1.0 while training goes on, else 0.0; the fraction done] after ``step`` steps and
        ``elapsed`` seconds: the two figures rank 0 hands every rank, so all stop together."""
        going = (self.steps is None or step < self.steps) and elapsed < self.seconds
        return [float(going), max(step / self.steps if self.steps else 0.0, elapsed / self.seconds)]

    @staticmethod
    def learning_rate(base_lr: float, done: float) -> float:
        """The learning rate of a group whose base is ``base_lr`` when ``done`` of training is done."""
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    def apply(self, optimizer: Any, done: float) -> None:
        """Set every parameter group's learning rate of ``optimizer`` (torch) for ``done``."""
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(group["base_lr"], done)
