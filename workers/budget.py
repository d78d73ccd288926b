"""A job's spending cap: the job pauses (not fails) before a call would take spend past it.

Before each call the executor asks ``try_reserve`` with the call's estimated cost (its family's
``expected_usage``: the same estimate as the TPM reservation and ``batcher estimate``). The call may go when

    recorded spend + this executor's spend since the last refresh + reserved in flight + estimate
    <= budget

Recorded spend is re-read from the store every second (``refresh``), so several workers see each
other's calls; each worker adds only its own in-flight reservations, so with N workers the
overshoot is bounded by the other workers' calls in flight. Refreshing while results are still
unflushed counts them twice for a moment: the guard errs on the early side, never the late.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.options import JobOptions
from jobs.records import Usage
from jobs.store import ModelUsage
from workers.cost import QUOTA_PER_USD, cost_of_attempt
from workers.endpoints import family_of
from workers.outcomes import Answered
from workers.prices import PriceBook, RelayPrice, load_prices


def spend_of(rows: Sequence[ModelUsage], book: PriceBook, group_ratio: Decimal) -> Decimal:
    """Recorded spend from per-model sums (a relay's per-call rounding adds at most 1 quota a call)."""
    total = Decimal(0)
    for row in rows:
        price = book.lookup(row.priced_as)
        total += cost_of_attempt(row.usage, price, group_ratio=group_ratio) or Decimal(0)
        if isinstance(price, RelayPrice):
            total += Decimal(row.calls) / QUOTA_PER_USD
    return total


class Budget:
    """The cap for one job as one executor sees it; see the module docstring."""

    def __init__(
        self,
        limit: Decimal,
        book: PriceBook,
        *,
        group: str | None,
        recorded: Callable[[], Sequence[ModelUsage]],
    ) -> None:
        self.limit, self.book = limit, book
        self.group_ratio = book.group_ratio(group)
        self._recorded_rows = recorded
        self._lock = threading.Lock()
        self.recorded = Decimal(0)
        self.local = Decimal(0)  # this executor's spend since the last refresh began
        self.reserved = Decimal(0)
        self.elsewhere = Decimal(0)  # charged, not yet recorded, not ours: other workers' tasks going

    def refresh(self) -> None:
        """Re-read the recorded spend (call from a thread: it queries the store)."""
        with self._lock:
            local_before = self.local
        recorded = spend_of(self._recorded_rows(), self.book, self.group_ratio)
        with self._lock:
            self.recorded, self.local = recorded, self.local - local_before

    def charged_elsewhere(self, rows: Sequence[ModelUsage]) -> None:
        """Set what tasks going elsewhere were charged (``jobs.store.tasks.charged_in_flight``)."""
        self.elsewhere = spend_of(rows, self.book, self.group_ratio)

    def estimate(self, endpoint: Endpoint, model: str, requests: Sequence[dict[str, Any]]) -> Decimal:
        """The expected cost of one call carrying these request bodies."""
        family = family_of(endpoint)
        usage = sum((family.expected_usage(r) for r in requests), Usage())
        priced_as = (family.price_key(model, requests[0]) if requests else None) or model
        return cost_of_attempt(usage, self.book.lookup(priced_as), group_ratio=self.group_ratio) or Decimal(0)

    def try_reserve(self, amount: Decimal) -> bool:
        """Reserve ``amount`` if spend stays within the budget; False means pause the job."""
        with self._lock:
            if self.recorded + self.local + self.reserved + self.elsewhere + amount > self.limit:
                return False
            self.reserved += amount
            return True

    def settle(self, reserved: Decimal, spent: Decimal) -> None:
        """A call ended: free its reservation and count what it cost."""
        with self._lock:
            self.reserved -= reserved
            self.local += spent

    def cost(self, model: str, usage: Usage) -> Decimal:
        """What a finished call cost (zero for an unpriced model: the job refused those at start)."""
        return cost_of_attempt(usage, self.book.lookup(model), group_ratio=self.group_ratio) or Decimal(0)

    def spent_text(self) -> str:
        """A sentence for the pause message."""
        spent = self.recorded + self.local
        going = self.reserved + self.elsewhere
        return f"spent ${spent:.4f} with ${going:.4f} in flight of a ${self.limit} budget"

    def reached_text(self) -> str:
        """Why the job paused, and how to go on."""
        return (
            f"budget reached: {self.spent_text()}; raise it with "
            "`batcher resume JOB --budget USD` (workers) or `batcher run-job JOB --budget USD`"
        )


def job_budget(store: Store, job_id: int, options: JobOptions) -> Budget | None:
    """The budget a job's options ask for (``budget``, ``prices``, ``group``), or None."""
    if options.budget is None:
        return None
    book = load_prices([Path(p) for p in options.prices])
    with store.session() as session:
        models = q.job_models(session, job_id)
    unpriced = [m for m in models if book.lookup(m) is None]
    if unpriced:
        raise ConfigError(
            f"a budget needs a price for every model; none for {', '.join(unpriced)}: "
            "add them with --prices FILE (see `batcher usage --help`)"
        )

    def recorded() -> list[ModelUsage]:
        with store.session() as session:
            return q.usage_by_model(session, job_id)

    return Budget(options.budget, book, group=options.group, recorded=recorded)


def settle_call(budget: Budget | None, model: str, answered: Answered | None, reserved: Decimal) -> None:
    """Settle a call's reservation: its cost if it answered with usage, its estimate if it may have
    run upstream with no answer, nothing if it was refused or never sent (None)."""
    if budget is None:
        return
    spent = Decimal(0)
    if answered is not None:
        usage, call = answered.usage(), answered.call
        if usage is not None:
            spent = budget.cost(model, usage)
        elif call.response is None and call.classification.sent:
            spent = reserved
    budget.settle(reserved, spent)
