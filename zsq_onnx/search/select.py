"""Selection over measured candidates, pure (no graph, no ORT): the order in which to upgrade
tensors from the cheapest quantizer, and which prefixes of that order to try."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TOLERANCE_DB = 0.5
GOOD_DB = 35.0


def upgrade_order(
    sqnr_db: Mapping[str, Mapping[str, float]], cost_ms: Mapping[str, Mapping[str, float]], start: str,
    tolerance_db: float = TOLERANCE_DB, good_db: float = GOOD_DB,
) -> list[tuple[str, str]]:
    """The upgrades (tensor, kind) from ``start`` everywhere, best first.

    Per tensor the target is the cheapest candidate within ``tolerance_db`` of its best SQNR
    (``start`` itself when it already reaches ``good_db``); tensors move toward their targets by
    the upgrade that removes the most noise (noise-to-signal ratio) per extra millisecond."""
    noise = {t: {k: 10 ** (-db / 10) for k, db in kinds.items()} for t, kinds in sqnr_db.items()}
    allowed: dict[str, set[str]] = {}
    for tensor, kinds in sqnr_db.items():
        best = max(kinds.values())
        good = [k for k, db in kinds.items() if db >= min(best - tolerance_db, good_db)]
        target = min(good, key=lambda k: cost_ms[tensor][k])
        allowed[tensor] = {k for k in kinds if cost_ms[tensor][k] <= cost_ms[tensor][target]}
    choice = dict.fromkeys(noise, start)
    order: list[tuple[str, str]] = []
    while True:
        best_move, best_rate = None, 0.0
        for tensor, kinds in noise.items():
            current = choice[tensor]
            for kind in allowed[tensor]:
                gain = kinds[current] - kinds[kind]
                if gain <= 0:
                    continue
                rate = gain / max(cost_ms[tensor][kind] - cost_ms[tensor][current], 1e-6)
                if best_move is None or rate > best_rate:
                    best_move, best_rate = (tensor, kind), rate
        if best_move is None:
            return order
        choice[best_move[0]] = best_move[1]
        order.append(best_move)


def choice_after(tensors: Sequence[str], order: Sequence[tuple[str, str]], count: int, start: str) -> dict[str, str]:
    """The choice per tensor after the first ``count`` upgrades of ``order``."""
    choice = dict.fromkeys(tensors, start)
    choice.update(order[:count])
    return choice


def prefix_lengths(total: int, tries: int = 4) -> list[int]:
    """Prefix lengths of the upgrade order to time, longest first: all of it, then evenly fewer.
    Latency is not monotonic in the prefix (a static layer between granular ones loses its
    integer kernel and pays for both quantizers), so a bisection could stop far too short."""
    return sorted({round(total * (tries - i) / tries) for i in range(tries)} - {0}, reverse=True)
