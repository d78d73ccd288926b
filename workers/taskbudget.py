"""A job's budget as task lines use it: a task is reserved at submit and settled when it ends.

The relay charges a task at submit and refunds it if it fails, and batcher writes a task's one
attempt when it ends; so a task holds its reservation (its per-call price, the same estimate as
``batcher estimate``) from the submit until its end. A task that succeeded, or whose submit got
no answer, is counted spent; a refusal or a refunded failure frees it. Tasks found already
submitted (a run after a crash) hold theirs from the start, whatever the budget says: the relay
has charged them. Tasks going in other executors' hands (other workers' passes, other messages)
are read from the store at each refresh and counted in flight (``Budget.elsewhere``): their
charges are in no recorded attempt until they end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from jobs.endpoints import Endpoint
from jobs.store import ModelUsage
from workers.budget import Budget

Key = tuple[int, bool]  # (line, whether the reservation is of its modal step)
InFlight = Callable[[], Sequence[ModelUsage]]  # the charges of tasks going that others hold


class TaskBudget:
    """The reservations of one engine's task lines; a no-op without a budget.

    A line holds one reservation for its submit and, once its modal step is to go, one for the
    step (priced as ``mj_modal``): the relay charges both.
    """

    def __init__(self, budget: Budget | None, *, in_flight: InFlight | None = None) -> None:
        self.budget, self._in_flight = budget, in_flight
        self._held: dict[Key, Decimal] = {}
        self.others = 0  # tasks going that other executors hold, at the last refresh

    def try_reserve(
        self, request_id: int, endpoint: Endpoint, model: str, body: dict[str, Any], *, step: bool = False
    ) -> bool:
        """Reserve a submit's price; False means the budget is reached (pause the job)."""
        if self.budget is None or (request_id, step) in self._held:
            return True
        amount = self.budget.estimate(endpoint, model, [body])
        if not self.budget.try_reserve(amount):
            return False
        self._held[request_id, step] = amount
        return True

    def hold(
        self, request_id: int, endpoint: Endpoint, model: str, body: dict[str, Any], *, step: bool = False
    ) -> None:
        """Hold a task the relay already charged (found submitted after a crash)."""
        if self.budget is not None and (request_id, step) not in self._held:
            amount = self.budget.estimate(endpoint, model, [body])
            self.budget.reserved += amount
            self._held[request_id, step] = amount

    def going(self, *, besides: int) -> bool:
        """Whether tasks other than this line's are charged (or about to be) and not ended yet."""
        return self.others > 0 or any(rid != besides for rid, _ in self._held)

    def free_step(self, request_id: int) -> None:
        """A modal step refused: nothing charged for it."""
        amount = self._held.pop((request_id, True), None)
        if self.budget is not None and amount is not None:
            self.budget.settle(amount, Decimal(0))

    def end(self, request_id: int, *, spent: bool) -> None:
        """A task ended: its prices spent, or freed (refused, refunded)."""
        for key in ((request_id, False), (request_id, True)):
            amount = self._held.pop(key, None)
            if self.budget is not None and amount is not None:
                self.budget.settle(amount, amount if spent else Decimal(0))

    def refresh(self) -> None:
        """Re-read the recorded spend and the tasks going elsewhere (from a thread).

        The tasks going first: one that ends in between is then counted twice for a moment (the
        guard errs early), never not at all.
        """
        if self.budget is None:
            return
        if self._in_flight is not None:
            rows = self._in_flight()
            self.budget.charged_elsewhere(rows)
            self.others = sum(r.calls for r in rows)
        self.budget.refresh()

    def spent_text(self) -> str:
        """A sentence for the pause message."""
        return self.budget.spent_text() if self.budget is not None else ""
