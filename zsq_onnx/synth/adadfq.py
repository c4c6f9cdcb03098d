"""AdaDFQ's game (Qian et al., CVPR 2023): the generator learns from the FP32 model P and,
during fine-tuning, against the quantized model Q, so that its samples are neither too easy nor
too hard for Q.

The generator's loss on a batch G(z, y):

- cross-entropy of P's logits on y (GDFQ's class condition);
- the BN-statistics loss of ZeroQ (:func:`zsq_onnx.synth.distill.stat_loss`) of every BatchNorm
  input of P, averaged over the layers;
- with Q: cross-entropy on y of the disagreement logits P - Q and of the agreement logits P + Q,
  and the margin term: the entropy of softmax(P - Q) per sample, normalized to [0, 1] between
  the batch minimum and log(classes), kept between ``margin_low`` and ``margin_high`` by hinges.
  High entropy means P and Q agree (the sample is easy for Q); low entropy, that they disagree.

Fine-tuning alternates (:meth:`GeneratorGame.next_batch`): one generator step against the
current Q, then a fresh generated batch for Q's KD step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.torch_graph import TorchGraph, torch_device
from zsq_onnx.recipe import GeneratorConfig
from zsq_onnx.synth.distill import SynthResult, batchnorm_input_targets, batchnorm_stats, input_prior, stat_loss
from zsq_onnx.synth.generator import ConditionalGenerator

logger = logging.getLogger(__name__)

ADAM_BETAS = (0.5, 0.999)


def normalized_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per sample, the entropy of softmax(P - Q) mapped to [0, 1]: 0 at the batch's least
    entropy, 1 at the entropy of the uniform distribution (P and Q equal up to a constant)."""
    difference = teacher_logits - student_logits
    entropy = -(F.softmax(difference, 1) * F.log_softmax(difference, 1)).sum(1)
    most = math.log(difference.shape[1])
    return (entropy - entropy.min()) / (most - entropy.min()).clamp_min(1e-8)


def margin_hinges(entropy: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Hinges that keep each normalized entropy within [low, high]: below ``low`` a sample is too
    hard for Q (descent pushes it up), above ``high`` too easy (pushed down), zero in between."""
    return F.relu(low - entropy).mean() + F.relu(entropy - high).mean()


def margin_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """AdaDFQ's margin term: :func:`margin_hinges` of the normalized entropy of P - Q."""
    return margin_hinges(normalized_entropy(teacher_logits, student_logits), low, high)


def adaptability_losses(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(disagreement, agreement): cross-entropy on ``labels`` of P - Q and of P + Q."""
    return F.cross_entropy(teacher_logits - student_logits, labels), F.cross_entropy(teacher_logits + student_logits, labels)


def model_classes(fp32: ir.Model, input_shape: tuple[int, ...]) -> int:
    """How many classes the model's first output scores: C of its (N, C) shape, run once when
    the graph does not declare it; BadInputError for a model that is not a classifier."""
    dims = fp32.graph.outputs[0].shape
    if dims is None or len(dims) != 2 or not isinstance(dims[1], int):
        graph = TorchGraph(fp32).eval()
        with torch.no_grad():
            dims = tuple(graph(torch.zeros(1, *input_shape)).shape)
    if len(dims) != 2 or dims[1] < 2:
        raise BadInputError(f"--synthesizer generator conditions on class labels: the model's output has shape {tuple(dims)}, not (N, classes)")
    return int(dims[1])


@contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """``module``'s parameters need no gradient within the block (gradients still reach its input)."""
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


class GeneratorGame:
    """The generator, its optimizer and the FP32 model it learns from; draws are seeded."""

    def __init__(self, fp32: ir.Model, input_shape: tuple[int, ...], config: GeneratorConfig, seed: int = 0,
                 device: str | torch.device = "cpu", generator: ConditionalGenerator | None = None) -> None:
        self.config, self.device, self.seed = config, torch_device(str(device)), seed
        distributed.require_parts(config.batch_size, "a generator batch")
        torch.manual_seed(seed)
        self.draws = torch.Generator().manual_seed(distributed.rank_seed(seed))
        if generator is None:
            prior = input_prior(fp32, input_shape[0])
            generator = ConditionalGenerator(tuple(input_shape), model_classes(fp32, input_shape), prior, config.latent_dim)
        self.generator = generator.to(self.device).train()
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=ADAM_BETAS)
        self.teacher = TorchGraph(fp32).eval().to(self.device)
        self.bn_targets = batchnorm_input_targets(self.teacher, batchnorm_stats(fp32))
        self.output_name = self.teacher.output_names[0]
        self.loss_curve: list[float] = []

    def teacher_terms(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P's logits, its cross-entropy on ``labels`` and the BN-statistics loss (mean over
        BatchNorm layers) on a generated batch."""
        values = self.teacher.run({self.teacher.input_names[0]: images}, [self.output_name, *(name for name, *_ in self.bn_targets)])
        logits = values[self.output_name]
        bn = torch.stack([stat_loss(values[name], mean, std, eps) for name, mean, std, eps in self.bn_targets]).mean()
        return logits, F.cross_entropy(logits, labels), bn

    def step(self, student: TorchGraph | None = None) -> float:
        """One generator update: against P alone, or with ``student`` (Q) the whole game. In a
        torch.distributed group each rank plays its :func:`~zsq_onnx.distributed.part` of the
        batch with draws of its own and the gradients are averaged over ranks."""
        part = distributed.part(self.config.batch_size)
        z, labels = self.generator.sample(part.stop - part.start, self.draws, self.device)
        images = self.generator(z, labels)
        teacher_logits, cross_entropy, bn = self.teacher_terms(images, labels)
        loss = self.config.ce_weight * cross_entropy + self.config.bn_weight * bn
        if student is not None:
            with _frozen(student):
                student_logits = student.run({student.input_names[0]: images}, [student.output_names[0]])[student.output_names[0]]
            disagreement, agreement = adaptability_losses(teacher_logits, student_logits, labels)
            margin = margin_loss(teacher_logits, student_logits, self.config.margin_low, self.config.margin_high)
            loss = loss + self.config.disagreement_weight * disagreement + self.config.agreement_weight * agreement + margin
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.generator.parameters())
        self.optimizer.step()
        self.loss_curve.append(loss.item())
        return self.loss_curve[-1]

    def generate(self, count: int, draws: torch.Generator | None = None) -> torch.Tensor:
        """``count`` fresh samples (no gradient), on the game's device, drawn from ``draws``
        (the game's own stream by default)."""
        z, labels = self.generator.sample(count, draws or self.draws, self.device)
        with torch.no_grad():
            return self.generator(z, labels)

    def next_batch(self, size: int, student: TorchGraph) -> torch.Tensor:
        """The fine-tuning source: a generator step against ``student``, then this rank's
        :func:`~zsq_onnx.distributed.part` of ``size`` fresh samples."""
        self.step(student)
        part = distributed.part(size)
        return self.generate(part.stop - part.start)

    def status(self) -> dict[str, str]:
        """The generator's recent loss, for the progress bar."""
        return {"g_loss": f"{np.mean(self.loss_curve[-20:]):.3f}"} if self.loss_curve else {}


def train_generator(game: GeneratorGame, steps: int, samples: int, batch_size: int, progress: bool = True, source: str = "model") -> SynthResult:
    """Warm the generator up against P alone for ``steps`` steps, then generate ``samples``
    calibration inputs, batch by batch with per-batch seeds (each rank its
    :func:`~zsq_onnx.distributed.shard`, gathered by :func:`~zsq_onnx.distributed.map_shards`); the loss curve is the generator's."""
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=steps, desc="generator", disable=not progress, leave=False, unit="step")
    for _ in range(steps):
        game.step()
        bar.update(1)
        bar.set_postfix(game.status())
    bar.close()
    sizes = [min(batch_size, samples - first) for first in range(0, samples, batch_size)]
    batches = distributed.map_shards(len(sizes), lambda index: game.generate(sizes[index], torch.Generator().manual_seed(distributed.batch_seed(game.seed, index))).cpu().numpy())
    seconds = time.perf_counter() - start
    curve = game.loss_curve[-steps:] if steps else []
    logger.info("%s: generator trained %d steps in %.1f s%s", source, steps, seconds, f", loss {curve[0]:.3f} -> {curve[-1]:.3f}" if curve else "")
    return SynthResult(batches, curve, {}, seconds, source="generated", game=game)
