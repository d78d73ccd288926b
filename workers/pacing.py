"""The pace of upstream calls: how many are in flight at once and when the next may go.

The executor takes a ``slot`` before each call and ``finish``es it once it knows what the call
used. Inside, today, are a fixed concurrency gate and a rate ``Limiter`` keyed by provider and
model; how calls are paced can change here without the executor knowing.

The permit a slot grants is the one that is settled: it is kept by the caller, never rebuilt
from its key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from workers.outcomes import Call
from workers.ratelimit import Limiter, Permit, header_pause
from workers.retry import next_delay


class Pacing:
    """A concurrency gate in front of a rate limiter; see the module docstring."""

    def __init__(
        self, limiter: Limiter, *, concurrency: int, provider: str, jitter: Callable[[], float]
    ) -> None:
        self.limiter = limiter
        self._calls = asyncio.Semaphore(concurrency)
        self._provider = provider
        self._jitter = jitter

    @contextlib.asynccontextmanager
    async def slot(self, model: str, tokens: int) -> AsyncIterator[Permit]:
        """Hold a call's place for the duration of the block: a free slot and the limiter's grant."""
        async with self._calls:
            yield await self.limiter.acquire(f"{self._provider}|{model}", tokens)

    async def finish(self, permit: Permit, call: Call, *, used_tokens: int | None) -> None:
        """The call ended: pause its key if the answer asks, then settle the reservation.

        ``used_tokens`` is what an answered call used; None when that is unknown, and then a call
        that may have run upstream keeps its reservation and a refused one used nothing.
        """
        pause = self._pause(call)
        # The pause goes first: settling opens the limiter's probe gate, which must stay shut.
        if pause is not None:
            await self.limiter.cooldown(permit.key, pause)
        if used_tokens is None:
            used_tokens = permit.tokens if call.classification.sent else 0
        await self.limiter.settle(permit, used_tokens)

    def _pause(self, call: Call) -> float | None:
        c = call.classification
        pause = header_pause(call.response.headers) if call.response is not None else None
        if c.retry_after is not None or c.error_class == "rate_limited":
            pause = max(pause or 0.0, c.retry_after or next_delay(c, 1, jitter=self._jitter()))
        return pause
