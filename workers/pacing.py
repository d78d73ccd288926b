"""The pace of upstream calls: how many are in flight at once and when the next may go.

The executor takes a ``slot`` before each call and ``finish``es it once it knows what the call
used. Inside are the adaptive concurrency gate (``workers.concurrency``: the limit found under
the ``--concurrency`` ceiling) and the rate ``Limiter`` keyed by provider and model (its pace
known from ``--rpm`` or found, ``workers.aimd``), and the counters the progress line shows.

What a finished call tells them:

- a rate limit (``Throttle.RATE``) lowers the shared pace, and pauses the key for everyone when
  the relay named a wait: its Retry-After (or ``llm_provider-retry-after``, or "try again in" in
  the message), which wins over an ``x-ratelimit-reset-*`` that only says the window is full;
- an overload (``Throttle.OVERLOAD``), a refused or reset connection, or a timeout lowers the
  concurrency; an answered call is a latency sample for it;
- an answered call settles its token reservation with the real usage and may raise the pace
  (not when its ``x-ratelimit-remaining-requests`` is 0: the window is full).

The permit a slot grants is the one that is settled: it is kept by the caller, never rebuilt
from its key.

Waiting for a slot (the concurrency gate, then the limiter) ends as soon as ``stop`` is set: a
job paused, cancelled or out of budget sends none of the calls queued behind the limiter, and
their places in the limiter are given back (``Limiter.acquire`` cancelled), so the next job or the
resumed one on the same key does not wait out a queue of calls that were never made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from jobs.errors import BatcherError
from workers.concurrency import AdaptiveGate, ConcurrencyState, on_overload, on_sample
from workers.outcomes import Call
from workers.pace import PaceCounters, PaceSnapshot
from workers.ratelimit import Limiter, PaceView, Permit, header_pause, window_full
from workers.retry import Throttle, Verdict

T = TypeVar("T")


class Pacing:
    """The concurrency gate in front of the rate limiter; see the module docstring."""

    def __init__(self, limiter: Limiter, *, concurrency: int, provider: str, adaptive: bool = True) -> None:
        self.limiter, self.provider, self.ceiling = limiter, provider, concurrency
        self.concurrency = ConcurrencyState(
            ceiling=concurrency, limit=0.0 if adaptive else float(concurrency)
        )
        self.counters = PaceCounters()
        self.views: dict[str, PaceView] = {}  # the limiter's paces as of the last ``refresh``
        self.in_flight = 0
        self._gate = AdaptiveGate(self.concurrency)
        self._keys: set[str] = set()

    @property
    def queued(self) -> bool:
        """A call waits for a place in the gate."""
        return self._gate.queued

    def key_of(self, model: str) -> str:
        """The limiter key: one pace per (provider, model)."""
        return f"{self.provider}|{model}"

    @contextlib.asynccontextmanager
    async def slot(
        self, model: str, tokens: int, *, stop: asyncio.Event | None = None
    ) -> AsyncIterator[Permit | None]:
        """Hold a call's place for the block: a free slot and the limiter's grant; None once stopped."""
        key, stop = self.key_of(model), stop or asyncio.Event()
        self._keys.add(key)
        permit = await self._admit(key, tokens, stop)
        if permit is None:  # the job stopped while this call waited its turn
            yield None
            return
        self.in_flight += 1
        try:
            yield permit
        finally:
            self.in_flight -= 1
            await self._gate.__aexit__(None, None, None)

    async def _admit(self, key: str, tokens: int, stop: asyncio.Event) -> Permit | None:
        """A place in the gate and the limiter's grant, or None (and neither held) once stopped.

        A free place and a grant that needs no wait are taken without a task: waits that the stop
        cancels cost two tasks each, and at a few hundred calls a second that was a tenth of them.
        """
        if stop.is_set() or not (self._gate.try_enter() or await self._wait_for_place(stop)):
            return None
        try:
            permit = self.limiter.granted_now(key, tokens)
            if permit is None:  # a wait the stop cancels gives its place back (acquire does)
                permit = await self._acquire(key, tokens, stop)
            if permit is not None and stop.is_set():  # granted but never sent: its tokens back
                await self.limiter.settle(permit, 0)
                permit = None
        except BaseException:
            await self._gate.__aexit__(None, None, None)
            raise
        if permit is None:
            await self._gate.__aexit__(None, None, None)
        return permit

    async def _acquire(self, key: str, tokens: int, stop: asyncio.Event) -> Permit | None:
        """The limiter's grant, or None once stopped; a grant the caller's cancellation overtakes
        (the wait had ended, the caller had not run yet) is settled as never sent, not dropped."""
        acquiring = asyncio.ensure_future(self.limiter.acquire(key, tokens))
        try:
            return await unless_stopped(acquiring, stop)
        except asyncio.CancelledError:
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                await asyncio.shield(self.limiter.settle(acquiring.result(), 0))
            raise

    async def _wait_for_place(self, stop: asyncio.Event) -> bool:
        """Wait in the gate's line until handed a place (True) or stopped (False, out of line).

        The line's future is awaited as it is, not through a task of its own: a place handed over
        reaches its call a turn of the loop sooner, and at the relay's cap every call waits here.
        """
        waiter = self._gate.queue()
        try:
            await unless_stopped(waiter, stop)  # the stop cancels the future itself
        except BaseException:
            self._gate.leave(waiter)
            raise
        if waiter.done() and not waiter.cancelled():
            return True
        self._gate.leave(waiter)
        return False

    async def finish(
        self, permit: Permit, call: Call, *, used_tokens: int | None, in_place: bool = False
    ) -> None:
        """The call ended: adapt the concurrency and the pace, then settle the reservation.

        ``used_tokens`` is what an answered call used; None when that is unknown, and then a call
        that may have run upstream keeps its reservation and a refused one used nothing.
        ``in_place``: the call still holds its place in the gate (it is among ``in_flight``).
        """
        c = call.classification
        self._adapt_concurrency(call, out=self.in_flight + (0 if in_place else 1))
        if c.throttle is Throttle.RATE:
            pause = c.retry_after
            if pause is None and call.response is not None:
                pause = header_pause(call.response.headers)
            self.counters.rate_limited += 1
            self.counters.cooldowns += bool(pause)
            # The pause goes first: settling opens the limiter's probe gate, which must stay shut.
            await self.limiter.limited(permit.key, pause)
        answered = used_tokens is not None
        if used_tokens is None:
            used_tokens = permit.tokens if c.sent else 0
        full = answered and call.response is not None and window_full(call.response.headers)
        await self.limiter.settle(permit, used_tokens, ok=answered, window_full=full)
        if answered:
            self.counters.count(1, used_tokens, now=time.monotonic())

    def _adapt_concurrency(self, call: Call, *, out: int) -> None:
        """``out``: the calls in flight, this one among them."""
        c, now = call.classification, time.monotonic()
        if c.verdict == Verdict.OK:
            on_sample(self.concurrency, call.duration_ms / 1000, in_flight=out, now=now)
        elif c.throttle is Throttle.OVERLOAD:  # answered at once: about the calls out when it went
            on_overload(self.concurrency, now, in_flight=out, sent_at=call.sent_at or None)
            self.counters.overloaded += 1
        elif c.error_class in ("connection", "timeout"):
            on_overload(self.concurrency, now)
        self._gate.wake()

    async def refresh(self) -> dict[str, PaceView]:
        """Read the limiter's pace of every key called so far (the last views if it cannot be read).

        Only displays and the learned pace read it: an unreachable limiter is the calls' business
        (they fail closed), not a reason to stop the executor's control loop or lose its results.
        """
        with contextlib.suppress(BatcherError):
            self.views = {key: await self.limiter.pace(key) for key in sorted(self._keys)}
        return self.views

    def snapshot(self) -> PaceSnapshot:
        """The pace now (the limiter's view as of the last ``refresh``)."""
        return self.counters.snapshot(
            now=time.monotonic(),
            in_flight=self.in_flight,
            concurrency=self.concurrency.admitted,
            ceiling=self.ceiling,
            views=self.views,
        )


async def unless_stopped(waiting: Awaitable[T], stop: asyncio.Event) -> T | None:
    """What ``waiting`` returns, or None if ``stop`` is set first (the wait is then cancelled)."""
    if stop.is_set():
        if asyncio.iscoroutine(waiting):
            waiting.close()  # never started: no "was never awaited" warning
        return None
    task = asyncio.ensure_future(waiting)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the caller itself was cancelled: so is the wait, clean-up and all
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
    try:
        return await task  # finished before the cancel took effect: its result stands
    except asyncio.CancelledError:
        return None
