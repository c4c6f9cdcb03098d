"""Data parallelism over torch.distributed: the one place that knows rank, world size, per-rank
and per-batch seeds, collectives and which rank writes.

A process belongs to a group when torchrun (or :func:`zsq_onnx.launcher.launch`, behind
``--nproc N``) set ``WORLD_SIZE`` > 1 in its environment; :func:`joined` then joins that group
(gloo for CPU tensors, nccl for CUDA ones) for the duration of a command. Outside a group every function
here is the single-process identity: one rank, :func:`gather` returns ``[value]``, every shard
is everything, so the stages call them unconditionally and never import torch for it.

Synthesis and calibration do not depend on the world size: work is split by batch or sample
index and seeded per batch (:func:`batch_seed`), never per rank, so a gathered pool equals the
single-process pool sample for sample, and min/max and histogram counts reduce exactly;
training steps equal the single-process ones to float rounding. A rank that fails makes the
next collective of every other rank fail: that surfaces as
:class:`~zsq_onnx.errors.PeerFailedError`, and only rank 0 writes, after every rank has reached
:func:`all_succeeded`.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np

from zsq_onnx.errors import BadInputError, PeerFailedError

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = timedelta(minutes=30)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the group: its rank, how many ranks there are, its rank on this
    node and the backend (None outside a group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this is rank 0: the one that shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.size > 1


_world = World()


def world() -> World:
    """The group this process has joined (one rank when none)."""
    return _world


def requested_size() -> int:
    """The world size torchrun or :func:`zsq_onnx.launcher.launch` put in the environment (1 when none)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise BadInputError(f"WORLD_SIZE={text!r} in the environment is not a number of processes") from None


@contextmanager
def joined(device: str = "cpu") -> Iterator[World]:
    """Join the process group the environment describes (WORLD_SIZE > 1) for the enclosed block,
    with gloo for CPU tensors and, when ``device`` is cuda, nccl for CUDA ones; one rank
    otherwise."""
    global _world
    size = requested_size()
    if size <= 1 or _world.distributed:
        yield _world
        return
    import torch
    import torch.distributed as dist

    from zsq_onnx.executors.torch_graph import torch_device

    backend = "cpu:gloo,cuda:nccl" if torch_device(device).type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend != "gloo":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    except (ValueError, RuntimeError) as exc:
        raise BadInputError(f"cannot join the torch.distributed group of {size} processes (run under torchrun, or use --nproc N): {exc}".splitlines()[0]) from None
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    logger.info("rank %d of %d joined (%s)", _world.rank, _world.size, backend)
    try:
        yield _world
        _collective(dist.barrier)  # no rank tears its connections down while another still reads from them
    finally:
        _world = World()
        dist.destroy_process_group()
        gc.collect()  # drop what still refers to the group now, not during interpreter shutdown


def _collective(operation: Callable[[], T]) -> T:
    """Run one collective; a peer that died or failed first surfaces as PeerFailedError. This
    rank's own failure inside the collective (CUDA out of memory, while it moves or reduces its
    tensors) stays what it is, so this rank reports the cause instead of blaming a peer."""
    try:
        return operation()
    except RuntimeError as exc:
        if _out_of_memory(exc):
            raise
        logger.debug("collective failed on rank %d: %s", _world.rank, exc)
        raise PeerFailedError(f"rank {_world.rank}: stopped because another rank failed") from None


def _out_of_memory(exc: RuntimeError) -> bool:
    """Whether ``exc`` is this process running out of (CUDA) memory: torch's OutOfMemoryError,
    or the "out of memory" that NCCL and the CUDA caching allocator put in their messages."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def gather(value: T) -> list[T]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not _world.distributed:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * _world.size
    _collective(lambda: dist.all_gather_object(values, value))
    return values


def from_main(figures: Callable[[], Sequence[float]], count: int) -> list[float]:
    """The ``count`` floats that ``figures()`` returns on rank 0, on every rank; only rank 0
    calls it (the others wait, so timings there are undisturbed). One small all-reduce, cheap
    enough to run every training step."""
    if not _world.distributed:
        return list(figures())
    import torch

    tensor = torch.tensor(figures() if _world.main else [0.0] * count, dtype=torch.float64)
    return sum_tensor(tensor).tolist()


def all_succeeded() -> None:
    """Return on every rank once all of them got here; PeerFailedError when one failed before."""
    gather(True)


def sum_tensor(tensor):
    """``tensor`` (a torch tensor, in place) summed over ranks."""
    if _world.distributed:
        import torch.distributed as dist

        _collective(lambda: dist.all_reduce(tensor))
    return tensor


def average_gradients(parameters) -> None:
    """Average the gradients of ``parameters`` (torch) over ranks, as DistributedDataParallel
    does, for modules trained outside it (the generator)."""
    if not _world.distributed:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            sum_tensor(parameter.grad).div_(_world.size)


def data_parallel(module, device):
    """``module`` (torch) wrapped in DistributedDataParallel in a group, so that each backward
    averages its gradients over ranks; ``module`` itself on one rank."""
    if not _world.distributed:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)


def shard(count: int) -> range:
    """The indices in ``range(count)`` this rank works on: every size-th from its rank, so
    batches of unequal cost spread evenly."""
    return range(_world.rank, count, _world.size)


def part(count: int) -> slice:
    """This rank's contiguous slice of ``count`` samples (sizes differ by at most one)."""
    start = _world.rank * count // _world.size
    return slice(start, (_world.rank + 1) * count // _world.size)


def require_parts(count: int, what: str) -> None:
    """BadInputError when ``count`` samples leave some rank without a :func:`part`."""
    if count < _world.size:
        raise BadInputError(f"{what} of {count} cannot be split over {_world.size} processes: give at least {_world.size}")


def map_shards(count: int, make: Callable[[int], T]) -> list[T]:
    """``[make(0), ..., make(count - 1)]`` on every rank, each rank calling ``make`` for its
    :func:`shard` of the indices only."""
    merged: dict[int, T] = {}
    for items in gather({index: make(index) for index in shard(count)}):
        merged.update(items)
    return [merged[index] for index in range(count)]


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch (or sample) ``index`` under the global ``seed``: what any rank working
    on that index uses, so results do not depend on the number of ranks."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def rank_seed(seed: int) -> int:
    """A seed of this rank's own under ``seed`` (for streams that are meant to differ per rank,
    such as the samples a generator draws)."""
    return seed if not _world.distributed else int(np.random.SeedSequence([seed, 1 << 20, _world.rank]).generate_state(1, np.uint64)[0] >> 1)
