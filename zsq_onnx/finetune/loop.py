"""Fine-tuning: the quantized graph (TorchGraph student) learns from the FP32 graph (teacher) by
KD on synthetic inputs; trained step sizes, adapters and weights go back into its initializers.

The inputs come from a :class:`BatchSource`: the distilled pool
(:class:`~zsq_onnx.synth.pool.SyntheticPool`), or AdaDFQ's generator
(:class:`~zsq_onnx.synth.adadfq.GeneratorGame`), which takes one step of its own against the
current student before each batch it hands out.

Trainable, by initializer name: the inputs that each quantizer kind marks trainable
(:func:`zsq_onnx.quantizers.registry.trainable_inputs`): scales (LSQ gradient scaling is in the
torch quantizers), adapters, and with ``train_weights`` the float weights and biases that
quantizers read (sources). Zero points stay as calibrated. The loss is
KL(teacher || student) of the softmax outputs at temperature T (times T^2); Adam or SGD with a
cosine schedule over steps or minutes, whichever ends first.

Each iteration runs four named steps: the batch (:class:`Batches`: which samples, this rank's
part), the training step (:class:`~zsq_onnx.finetune.kd.KDStep`), the schedule
(:class:`~zsq_onnx.finetune.schedule.Schedule`) and the observation
(:class:`~zsq_onnx.finetune.observe.Observer`: progress bar, checkpoint hook).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError
from zsq_onnx.finetune.kd import KDStep, Tally
from zsq_onnx.finetune.observe import Checkpoint, Observer
from zsq_onnx.finetune.schedule import Schedule
from zsq_onnx.quantizers.registry import Role, trainable_inputs
from zsq_onnx.recipe import FinetuneConfig
from zsq_onnx.synth.distill import batchnorm_stats

logger = logging.getLogger(__name__)

_GROUPS = {Role.SCALE: "scales", Role.ADAPTER: "adapters", Role.SOURCE: "weights"}  # optimizer group of each trainable role


class BatchSource(Protocol):
    """Where fine-tuning's batches come from; ``loss_curve`` is the source's own training loss
    (a generator's), empty for a fixed pool."""

    loss_curve: list[float]

    def next_batch(self, size: int, student: Any) -> Any:
        """``size`` inputs (a numpy array or a torch tensor) for the next step of ``student``."""

    def status(self) -> dict[str, str]:
        """What the progress bar shows about the source."""


@dataclass(frozen=True)
class Batches:
    """Which samples each step trains on: this rank's :func:`~zsq_onnx.distributed.part` of a
    global batch of ``size`` from ``source`` (the source draws the whole batch and hands out the
    part), and that part's ``weight`` in the global batch mean, so that the gradients DDP
    averages over ranks are the single-process ones."""

    source: BatchSource
    size: int
    device: Any

    def __post_init__(self) -> None:
        distributed.require_parts(self.size, "a fine-tuning batch")

    @property
    def weight(self) -> float:
        """This rank's share of the global batch, times the number of ranks (1.0 on one rank)."""
        share = distributed.part(self.size)
        return (share.stop - share.start) * distributed.world().size / self.size

    def next(self, student: Any) -> Any:
        """This rank's inputs for the next step of ``student``, a torch tensor on ``device``."""
        import torch

        return torch.as_tensor(self.source.next_batch(self.size, student)).to(self.device)


@dataclass(frozen=True)
class TrainableNames:
    """Initializer names that fine-tuning trains, by kind."""

    scales: tuple[str, ...]
    adapters: tuple[str, ...]
    weights: tuple[str, ...]

    @property
    def all(self) -> frozenset[str]:
        """Every trainable initializer name."""
        return frozenset((*self.scales, *self.adapters, *self.weights))


@dataclass(frozen=True)
class FinetuneResult:
    """What fine-tuning did: steps, seconds, loss and batch agreement with the teacher (one point
    per logged step), and how many initializers of each kind trained."""

    steps: int
    seconds: float
    loss_curve: list[float]
    agreement_curve: list[float]
    trained: dict[str, int]
    device: str
    source_loss_curve: list[float] = field(default_factory=list)


def trainable_names(model: ir.Model, train_weights: bool) -> TrainableNames:
    """The initializers fine-tuning trains in ``model`` (see module docstring)."""
    floats = {name for name, value in model.graph.initializers.items() if value.const_value.dtype == ir.DataType.FLOAT}
    groups: dict[str, list[str]] = {"scales": [], "adapters": [], "weights": []}
    for node in model.graph:
        for entry, value in trainable_inputs(node):
            group = _GROUPS.get(entry.role)
            if group is None or value.name not in floats:
                continue
            groups[group].append(value.name)
    unique = lambda names: tuple(dict.fromkeys(names))  # noqa: E731
    return TrainableNames(unique(groups["scales"]), unique(groups["adapters"]), unique(groups["weights"]) if train_weights else ())


def _optimizer(student, names: TrainableNames, config: FinetuneConfig):
    """Parameter groups: each scale at lr x its initial mean magnitude, adapters at lr / 10,
    weights at weight_lr; every group keeps its base lr for the schedule."""
    import torch

    groups = []
    for name in names.scales:
        parameter = student.parameter(name)
        groups.append({"params": [parameter], "lr": config.lr * float(parameter.detach().abs().mean().clamp(min=1e-8))})
    if names.adapters:
        groups.append({"params": [student.parameter(n) for n in names.adapters], "lr": config.lr / 10})
    if names.weights:
        groups.append({"params": [student.parameter(n) for n in names.weights], "lr": config.weight_lr})
    for group in groups:
        group["base_lr"] = group["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.Adam(groups, lr=config.lr)


def batchnorm_output_targets(fp32: ir.Model, teacher, student) -> list[tuple]:
    """(tensor name, mean, std) that each BatchNorm's output has on data matching its running
    statistics: beta and |gamma| sqrt(var / (var + eps)); only for outputs the student computes
    (BN folding keeps the output's name on the folded layer)."""
    import torch

    targets = []
    for stat in batchnorm_stats(fp32):
        if not student.computes(stat.output):
            continue
        var = teacher.parameter(stat.var).detach()
        std = teacher.parameter(stat.scale).detach().abs() * torch.sqrt(var / (var + stat.epsilon))
        targets.append((stat.output, teacher.parameter(stat.bias).detach(), std))
    if not targets:
        raise BadInputError("--finetune-bn-loss: none of the FP32 model's BatchNorm outputs is computed by the quantized graph")
    return targets


def finetune(
    fp32: ir.Model, quantized: ir.Model, source: BatchSource, config: FinetuneConfig, seed: int = 0, progress: bool = True,
    checkpoint: Checkpoint | None = None, checkpoint_seconds: float = 60.0,
) -> tuple[ir.Model, FinetuneResult]:
    """Train ``quantized`` against ``fp32`` on batches from ``source``; return the model with the
    trained initializers written back, and what happened. ``checkpoint(step, seconds, model)``
    is called with the written-back model every ``checkpoint_seconds`` of training and at the
    end; the time it takes does not count against ``config.minutes``."""
    import torch

    from zsq_onnx.executors.torch_graph import TorchGraph, torch_device

    device = torch_device(config.device)
    torch.manual_seed(seed)
    names = trainable_names(quantized, config.train_weights)
    if not names.all:
        raise BadInputError("fine-tuning found nothing to train: the model has no zsq quantizers with float scales")
    teacher = TorchGraph(fp32).eval().to(device)
    student = TorchGraph(quantized, trainable=lambda name: name in names.all).to(device)
    train, batches = _training(fp32, teacher, student, source, names, config, device)
    schedule = Schedule.of(config)
    tallies: list[Tally] = []
    source_start = len(source.loss_curve)
    observer = Observer(schedule.steps, progress, source.status, lambda: student.write_back(quantized), checkpoint, checkpoint_seconds)
    step = 0
    while True:
        elapsed = observer.before_step(step)
        go_on, done = distributed.from_main(lambda: schedule.position(step, elapsed), 2)
        if not go_on:
            break
        schedule.apply(train.optimizer, done)
        tallies.append(train(batches.next(student), batches.weight))
        step += 1
        observer.after_step(tallies)
    observer.close()
    losses, agreements = batch_means(tallies)
    seconds = observer.elapsed()
    trained = student.cpu().write_back(quantized)
    observer.finish(step, seconds, trained)
    counts = {"scales": len(names.scales), "adapters": len(names.adapters), "weights": len(names.weights)}
    return trained, FinetuneResult(step, seconds, losses, agreements, counts, str(device), source.loss_curve[source_start:])


def _training(fp32: ir.Model, teacher: Any, student: Any, source: BatchSource, names: TrainableNames, config: FinetuneConfig, device: Any) -> tuple[KDStep, Batches]:
    """The training step and the batches of fine-tuning ``student`` (TorchGraph) against
    ``teacher``: the optimizer, the BatchNorm output targets when ``config.bn_loss`` > 0, and the
    student's outputs wrapped in DistributedDataParallel in a group."""
    from zsq_onnx.executors.torch_graph import GraphOutputs

    optimizer = _optimizer(student, names, config)
    bn_targets = [(name, mean.to(device), std.to(device)) for name, mean, std in batchnorm_output_targets(fp32, teacher, student)] if config.bn_loss > 0 else []
    output_name = student.output_names[0]
    batches = Batches(source, config.batch_size, device)
    trainer = distributed.data_parallel(GraphOutputs(student, (output_name, *(name for name, _, _ in bn_targets))), device)
    scales = [student.parameter(name) for name in names.scales]
    return KDStep(teacher, trainer, optimizer, output_name, bn_targets, scales, config.temperature, config.bn_loss), batches


def batch_means(tallies: list[Tally]) -> tuple[list[float], list[float]]:
    """Per step, the loss and teacher agreement of the whole (global) batch, from each rank's
    (loss x samples, agreeing samples, samples): one sum over ranks at the end of training."""
    import torch

    totals = distributed.sum_tensor(torch.tensor(tallies, dtype=torch.float64).reshape(-1, 3)).numpy()
    return (totals[:, 0] / totals[:, 2]).tolist(), (totals[:, 1] / totals[:, 2]).tolist()
