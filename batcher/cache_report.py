"""What the response cache saved: the lines it answered, the tokens and money they did not cost.

Cached lines make no upstream call, so the usage report (which counts calls) never bills them;
this adds beside it what those lines would have cost at the same prices, and ``batcher cache
stats`` what the cache holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlmodel import Session

from jobs import store as q
from jobs.records import Usage
from workers.cost import cost_of_attempt
from workers.prices import PriceBook


@dataclass(frozen=True)
class CacheSaved:
    """Lines answered from the cache (each a call not made), their usage, and its price (USD)."""

    lines: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    unpriced_models: frozenset[str] = frozenset()


def cache_saved(
    session: Session, job_ids: Sequence[int] | None, prices: PriceBook, *, ratio: Decimal = Decimal(1)
) -> CacheSaved:
    """What the cached lines of these jobs (all: None) would have cost."""
    lines, usage, cost, unpriced = 0, Usage(), Decimal(0), set()
    for row in q.cached_lines(session, job_ids):
        lines, usage = lines + row.lines, usage + row.usage
        priced = cost_of_attempt(row.usage, prices.lookup(row.model), group_ratio=ratio)
        if priced is None:
            unpriced.add(row.model)
        else:
            cost += priced
    return CacheSaved(lines, usage, cost, frozenset(unpriced))


def saved_note(saved: CacheSaved, *, money: str, currency: str) -> str | None:
    """One line for the usage report's notes; None when the cache answered nothing."""
    if not saved.lines:
        return None
    note = (
        f"cache: {saved.lines} lines answered from earlier results (not called, not billed), saving "
        f"{saved.lines} calls, {saved.usage.tokens} tokens and {money} {currency}"
    )
    if saved.unpriced_models:
        note += f" (no price for {', '.join(sorted(saved.unpriced_models))})"
    return note
