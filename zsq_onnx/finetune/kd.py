"""One fine-tuning step of the student against the teacher: the KD loss (plus the optional
BatchNorm output loss), the backward weighted by this rank's share of the global batch
(DistributedDataParallel averages the gradients over ranks in it), the optimizer step, and the
trained step sizes kept positive."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from zsq_onnx.synth.distill import stat_loss

logger = logging.getLogger(__name__)

MIN_SCALE = 1e-8  # a trained step size never goes below this (an optimizer step can overshoot zero)

Tally = tuple[float, float, int]  # one step on one rank: loss x samples, samples agreeing with the teacher, samples


def kd_loss(student_logits, teacher_logits, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, averaged over the batch."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1), log_target=True, reduction="batchmean") * temperature**2


def clamp_scales(scales: list) -> None:
    """Keep the trained step sizes ``scales`` (torch parameters) at :data:`MIN_SCALE` or above, in place."""
    import torch

    with torch.no_grad():
        for scale in scales:
            scale.clamp_(min=MIN_SCALE)


@dataclass(frozen=True)
class KDStep:
    """What one step trains with: the teacher, the student's outputs (``trainer``: the logits
    ``output_name`` and the BatchNorm outputs of ``bn_targets``, DDP-wrapped in a group), the
    optimizer, the scales to clamp, the KD temperature and the BatchNorm loss weight."""

    teacher: Any
    trainer: Any
    optimizer: Any
    output_name: str
    bn_targets: list[tuple]
    scales: list
    temperature: float
    bn_loss: float

    def __call__(self, inputs: Any, weight: float) -> Tally:
        """Train on ``inputs`` (this rank's part of the batch, whose loss counts ``weight`` times
        in the global mean); return this step's tally."""
        import torch

        with torch.no_grad():
            target = self.teacher(inputs)
        values = self.trainer(inputs)
        output = values[self.output_name]
        loss = kd_loss(output, target, self.temperature)
        if self.bn_targets:
            loss = loss + self.bn_loss * sum(stat_loss(values[name], mean, std, 0.0) for name, mean, std in self.bn_targets)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        self.optimizer.step()
        clamp_scales(self.scales)
        return loss.item() * len(inputs), float((output.argmax(1) == target.argmax(1)).sum()), len(inputs)
