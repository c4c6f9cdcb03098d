"""The Pareto frontier of a per-layer choice, pure (numpy only, no graph): ZeroQ's dynamic
programming over layers with the total cost in bins.

Each layer ``l`` has choices ``c`` with a cost ``costs[l][c]`` (bytes of weights, or BOPs) and a
sensitivity ``sensitivities[l][c]`` (KL divergence); an assignment picks one choice per layer and
is scored by the sums. The DP walks the layers keeping, per bin of accumulated cost, the smallest
accumulated sensitivity and the choice that reached it; backtracking from every reachable end bin
gives one assignment per bin, and the frontier is those not dominated on their *true* (unbinned)
cost and sensitivity.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BINS = 4000
BUDGET_TOLERANCE = 1e-9  # relative: a budget met exactly by one order of summation is met by any


@dataclass(frozen=True)
class Assignment:
    """One choice index per layer, with its total cost and total sensitivity."""

    choices: tuple[int, ...]
    cost: float
    sensitivity: float


def _totals(choices: Sequence[int], costs: Sequence[Sequence[float]], sensitivities: Sequence[Sequence[float]]) -> tuple[float, float]:
    cost = float(sum(costs[layer][choice] for layer, choice in enumerate(choices)))
    return cost, float(sum(sensitivities[layer][choice] for layer, choice in enumerate(choices)))


def pareto_frontier(costs: Sequence[Sequence[float]], sensitivities: Sequence[Sequence[float]], bins: int = DEFAULT_BINS) -> list[Assignment]:
    """The non-dominated assignments, cheapest first (so sensitivity strictly falls along the list).

    Costs are binned after subtracting each layer's cheapest choice: the range from the cheapest
    to the dearest assignment is cut into ``bins`` equal bins and each choice's extra cost is
    rounded to whole bins. Binning is exact when the costs are integers and ``bins`` is an integer
    multiple of that range; otherwise the DP may keep, within one bin, an assignment slightly
    dearer than another of equal sensitivity, which only thins the frontier. Sensitivities must
    be finite."""
    if len(costs) != len(sensitivities) or any(len(c) != len(s) or not c for c, s in zip(costs, sensitivities)):
        raise ValueError("costs and sensitivities need the same non-empty choices per layer")
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    if not costs:
        return [Assignment((), 0.0, 0.0)]
    extra = [np.asarray(c, np.float64) - min(c) for c in costs]
    span = float(sum(e.max() for e in extra))
    unit = span / bins if span > 0 else 1.0
    steps = [np.rint(e / unit).astype(np.int64) for e in extra]
    size = int(sum(s.max() for s in steps)) + 1
    best = np.full(size, np.inf)
    best[0] = 0.0
    back = np.zeros((len(costs), size), np.int32)
    for layer, (shift, sens) in enumerate(zip(steps, sensitivities)):
        merged = np.full(size, np.inf)
        pick = np.zeros(size, np.int32)
        for choice, (offset, value) in enumerate(zip(shift, sens)):
            candidate = np.full(size, np.inf)
            candidate[offset:] = best[: size - offset] + float(value)
            better = candidate < merged
            merged[better] = candidate[better]
            pick[better] = choice
        best, back[layer] = merged, pick
    points = []
    for end in np.flatnonzero(np.isfinite(best)):
        state, choices = int(end), []
        for layer in range(len(costs) - 1, -1, -1):
            choice = int(back[layer, state])
            choices.append(choice)
            state -= int(steps[layer][choice])
        choices.reverse()
        points.append(Assignment(tuple(choices), *_totals(choices, costs, sensitivities)))
    points.sort(key=lambda point: (point.cost, point.sensitivity))
    frontier: list[Assignment] = []
    for point in points:
        if not frontier or point.sensitivity < frontier[-1].sensitivity:
            frontier.append(point)
    logger.debug("frontier: %d layers, %d bins of %.4g, %d reachable end bins, %d non-dominated points", len(costs), bins, unit, len(points), len(frontier))
    return frontier


def best_within(frontier: Sequence[Assignment], budget: float) -> int | None:
    """Index of the least sensitive point of a frontier (cheapest first) whose true cost is within
    ``budget``, or None when even the cheapest is over it."""
    limit = budget * (1 + BUDGET_TOLERANCE) if budget > 0 else budget
    within = [index for index, point in enumerate(frontier) if point.cost <= limit]
    return min(within, key=lambda index: frontier[index].sensitivity) if within else None


def thin(costs: Sequence[float], count: int, keep: Collection[int] = ()) -> list[int]:
    """Indices, ascending, of at most ``count`` points (at least the first, the last and those
    in ``keep``) of a cost-sorted list: the nearest to costs evenly spaced from the first to the
    last, as many as fit beside ``keep``."""
    if len(costs) <= count:
        return list(range(len(costs)))
    values = np.asarray(costs, np.float64)
    kept = set(keep) | {0, len(costs) - 1}
    for target in np.linspace(values[0], values[-1], max(count - len(kept) + 2, 2)):
        kept.add(int(np.argmin(np.abs(values - target))))
    return sorted(kept)
