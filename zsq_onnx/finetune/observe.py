"""What watches fine-tuning without changing it: the training clock, the progress bar and the
checkpoint hook (a bench's curve of the model over training time). The hook's own time is not
training time, so it does not eat into ``--finetune-minutes``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.finetune.kd import Tally

logger = logging.getLogger(__name__)

Checkpoint = Callable[[int, float, ir.Model], None]  # (step, training seconds, written-back model)

RECENT_STEPS = 20  # the progress bar's loss and agreement are over this many last steps


class Observer:
    """The clock, bar and checkpoint hook of one fine-tuning run. ``snapshot()`` writes the
    trained values back into a model for ``checkpoint``, which rank 0 calls every
    ``checkpoint_seconds`` of training and at the end; ``status()`` is what the batch source
    shows on the bar."""

    def __init__(
        self, total: int | None, progress: bool, status: Callable[[], dict[str, str]], snapshot: Callable[[], ir.Model],
        checkpoint: Checkpoint | None = None, checkpoint_seconds: float = 60.0, clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from tqdm import tqdm

        self.status, self.snapshot, self.checkpoint, self.checkpoint_seconds, self.clock = status, snapshot, checkpoint, checkpoint_seconds, clock
        self.start = clock()
        self.paused, self.next_checkpoint = 0.0, checkpoint_seconds
        self.bar = tqdm(total=total, desc="finetune", disable=not progress, leave=False, unit="step")

    def elapsed(self) -> float:
        """Seconds of training so far, less the time the checkpoint hook took."""
        return self.clock() - self.start - self.paused

    def before_step(self, step: int) -> float:
        """Call the checkpoint hook when it is due (rank 0); return the training seconds so far."""
        elapsed = self.elapsed()
        if self.checkpoint is not None and elapsed >= self.next_checkpoint and distributed.world().main:
            pause = self.clock()
            self.checkpoint(step, elapsed, self.snapshot())
            self.paused += self.clock() - pause
            self.next_checkpoint += self.checkpoint_seconds
            elapsed = self.elapsed()
        return elapsed

    def after_step(self, tallies: list[Tally]) -> None:
        """Advance the bar; show the loss and teacher agreement of the recent steps and the source's status."""
        self.bar.update(1)
        recent = np.sum(tallies[-RECENT_STEPS:], axis=0)
        self.bar.set_postfix(loss=f"{recent[0] / recent[2]:.4f}", agreement=f"{recent[1] / recent[2]:.3f}", **self.status())

    def close(self) -> None:
        """Take the bar down."""
        self.bar.close()

    def finish(self, step: int, seconds: float, trained: ir.Model) -> None:
        """Call the checkpoint hook with the final model (rank 0)."""
        if self.checkpoint is not None and distributed.world().main:
            self.checkpoint(step, seconds, trained)
