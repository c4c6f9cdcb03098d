"""Fine-tuning's named steps on their own: the schedule's values, each rank's batch and weight,
the training step's tally and scale clamping, and when the observer calls the checkpoint hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError
from zsq_onnx.finetune.kd import MIN_SCALE, KDStep, clamp_scales
from zsq_onnx.finetune.loop import Batches
from zsq_onnx.finetune.observe import Observer
from zsq_onnx.finetune.schedule import Schedule
from zsq_onnx.recipe import FinetuneConfig
from zsq_onnx.synth.pool import SyntheticPool


def test_the_schedule_ends_at_its_steps_or_its_minutes_whichever_comes_first():
    assert Schedule.of(FinetuneConfig(steps=4)) == Schedule(4, math.inf)
    assert Schedule.of(FinetuneConfig(minutes=2)) == Schedule(None, 120)
    by_steps = Schedule(4, math.inf)
    assert by_steps.position(0, 0.0) == [1.0, 0.0]
    assert by_steps.position(2, 1e6) == [1.0, 0.5]
    assert by_steps.position(4, 0.0) == [0.0, 1.0]
    both = Schedule(10, 60.0)
    assert both.position(2, 30.0) == [1.0, 0.5]
    assert both.position(5, 60.0) == [0.0, 1.0]


def test_the_learning_rate_follows_a_half_cosine_to_zero():
    assert Schedule.learning_rate(0.1, 0.0) == pytest.approx(0.1)
    assert Schedule.learning_rate(0.1, 0.5) == pytest.approx(0.05)
    assert Schedule.learning_rate(0.1, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert Schedule.learning_rate(0.1, 3.0) == Schedule.learning_rate(0.1, 1.0)
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(1))], "lr": 2.0, "base_lr": 2.0},
                                 {"params": [torch.nn.Parameter(torch.ones(1))], "lr": 0.4, "base_lr": 0.4}], lr=1.0)
    Schedule(4, math.inf).apply(optimizer, 0.5)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1.0, 0.2])


def _on_rank(monkeypatch, rank: int, size: int) -> None:
    monkeypatch.setattr(distributed, "_world", distributed.World(rank, size))


def test_each_rank_trains_on_its_part_of_the_global_batch(monkeypatch):
    inputs = np.random.default_rng(0).normal(size=(20, 1, 8, 8)).astype(np.float32)
    whole = Batches(SyntheticPool(inputs, seed=3), 15, "cpu")
    expected = whole.next(None)
    assert whole.weight == 1.0 and expected.shape == (15, 1, 8, 8)
    parts, weights = [], []
    for rank in range(2):
        _on_rank(monkeypatch, rank, 2)
        batches = Batches(SyntheticPool(inputs, seed=3), 15, "cpu")
        parts.append(batches.next(None))
        weights.append(batches.weight)
    assert [len(part) for part in parts] == [7, 8]
    assert weights == pytest.approx([14 / 15, 16 / 15])
    torch.testing.assert_close(torch.cat(parts), expected, rtol=0, atol=0)


def test_a_batch_smaller_than_the_world_is_refused(monkeypatch):
    _on_rank(monkeypatch, 0, 4)
    with pytest.raises(BadInputError, match="4 processes"):
        Batches(SyntheticPool(np.zeros((8, 3), np.float32)), 3, "cpu")


def test_clamping_keeps_scales_positive():
    scales = [torch.nn.Parameter(torch.tensor([-1.0, 0.0, 0.5])), torch.nn.Parameter(torch.tensor([2.0]))]
    clamp_scales(scales)
    assert torch.equal(scales[0].detach(), torch.tensor([MIN_SCALE, MIN_SCALE, 0.5]))
    assert torch.equal(scales[1].detach(), torch.tensor([2.0]))


def test_a_training_step_tallies_its_batch_and_clamps_the_scales():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    scale = torch.nn.Parameter(torch.tensor([-0.5]))
    optimizer = torch.optim.SGD([*student.parameters(), scale], lr=0.1)
    step = KDStep(teacher, lambda x: {"logits": student(x)}, optimizer, "logits", [], [scale], temperature=1.0, bn_loss=0.0)
    before = student.weight.detach().clone()
    loss_sum, agreeing, samples = step(torch.randn(6, 4), weight=1.0)
    assert samples == 6 and 0 <= agreeing <= 6 and loss_sum > 0
    assert not torch.equal(student.weight.detach(), before)
    assert scale.item() == pytest.approx(MIN_SCALE)


class _Clock:
    """A clock the test moves; the checkpoint hook takes 100 s of it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_observer_calls_the_checkpoint_hook_every_interval_and_at_the_end():
    clock, calls = _Clock(), []

    def checkpoint(step: int, seconds: float, model) -> None:
        calls.append((step, seconds, model))
        clock.now += 100.0

    observer = Observer(None, False, dict, lambda: "snapshot", checkpoint, checkpoint_seconds=10.0, clock=clock)
    for step, now in enumerate((5.0, 12.0, 125.0, 228.0)):
        clock.now = now
        observer.before_step(step)
    observer.close()
    assert observer.elapsed() == 28.0  # the hook's 200 s are not training time
    observer.finish(3, observer.elapsed(), "trained")
    assert calls == [(1, 12.0, "snapshot"), (2, 25.0, "snapshot"), (3, 28.0, "trained")]


def test_only_rank_0_calls_the_checkpoint_hook(monkeypatch):
    _on_rank(monkeypatch, 1, 2)
    calls = []
    observer = Observer(2, False, dict, lambda: "snapshot", lambda *args: calls.append(args), checkpoint_seconds=0.0)
    observer.before_step(0)
    observer.after_step([(1.0, 1.0, 2)])
    observer.close()
    observer.finish(1, 0.0, "trained")
    assert calls == []
