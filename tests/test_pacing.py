"""Pacing: a call slot holds the limiter's permit, and finishing a call settles that very permit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from jobs.errors import LimiterError
from workers.client import RawResponse
from workers.outcomes import Call
from workers.pacing import Pacing
from workers.ratelimit import InProcessLimiter, Limits, PaceView, Permit
from workers.retry import Classification, Throttle, Verdict

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class TicketLimiter(InProcessLimiter):
    """Hands out numbered permits and records what happens to them, in order."""

    def __init__(self) -> None:
        super().__init__(Limits())
        self.granted: list[Permit] = []
        self.events: list[tuple[str, object, object]] = []

    def granted_now(self, key: str, tokens: int) -> Permit | None:
        return None  # every call goes through acquire

    async def acquire(self, key: str, tokens: int) -> Permit:
        permit = Permit(key, tokens)
        self.granted.append(permit)
        return permit

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        self.events.append(("settle", permit, used_tokens))

    async def limited(self, key: str, pause: float | None) -> None:
        self.events.append(("limited", key, pause))


def call(verdict: Verdict, *, sent: bool | None, status: int | None = 200, **kw: object) -> Call:
    c = Classification(
        verdict=verdict, error_class=str(kw.pop("error_class", "ok")), message="", sent=sent, **kw
    )  # type: ignore[arg-type]
    response = RawResponse(status, httpx.Headers(), b"{}") if status is not None else None
    return Call(c, response, NOW, 5)


def pacing(limiter: TicketLimiter, concurrency: int = 4) -> Pacing:
    return Pacing(limiter, concurrency=concurrency, provider="relay", adaptive=False)


async def test_finish_settles_the_permit_the_slot_granted() -> None:
    limiter = TicketLimiter()
    p = pacing(limiter)
    async with p.slot("m", 40) as permit:
        pass
    await p.finish(permit, call(Verdict.OK, sent=True), used_tokens=12)
    [granted] = limiter.granted
    assert granted.key == "relay|m"
    assert limiter.events == [("settle", granted, 12)]
    assert limiter.events[0][1] is granted  # kept, not rebuilt from its key


@pytest.mark.parametrize(
    ("verdict", "sent", "used", "settled"),
    [
        (Verdict.OK, True, 7, 7),  # answered: what the answer says it used
        (Verdict.RETRY, True, None, 40),  # may have run upstream: keeps its reservation
        (Verdict.RETRY, False, None, 0),  # refused before it ran: used nothing
        (Verdict.PERMANENT, None, None, 0),  # not known to have run
    ],
)
async def test_what_a_finished_call_settles(
    verdict: Verdict, sent: bool | None, used: int | None, settled: int
) -> None:
    limiter = TicketLimiter()
    p = pacing(limiter)
    async with p.slot("m", 40) as permit:
        pass
    await p.finish(permit, call(verdict, sent=sent), used_tokens=used)
    assert limiter.events == [("settle", permit, settled)]


async def test_a_429_pauses_the_key_before_the_permit_is_settled() -> None:
    limiter = TicketLimiter()
    p = pacing(limiter)
    async with p.slot("m", 40) as permit:
        pass
    refused = call(
        Verdict.RETRY,
        sent=False,
        status=429,
        error_class="rate_limited",
        retry_after=3.0,
        throttle=Throttle.RATE,
    )
    await p.finish(permit, refused, used_tokens=None)
    assert limiter.events == [("limited", "relay|m", 3.0), ("settle", permit, 0)]
    assert p.counters.rate_limited == 1


async def test_a_5xx_with_retry_after_pauses_nothing() -> None:
    """Only a rate limit pauses the key: a 503 overload's wait is that line's, not everyone's."""
    limiter = TicketLimiter()
    p = pacing(limiter)
    async with p.slot("m", 40) as permit:
        pass
    busy = call(
        Verdict.RETRY,
        sent=True,
        status=503,
        error_class="overloaded",
        retry_after=1.0,
        throttle=Throttle.OVERLOAD,
    )
    await p.finish(permit, busy, used_tokens=None)
    assert limiter.events == [("settle", permit, 40)]
    assert p.counters.overloaded == 1


async def test_an_overload_aims_the_concurrency_under_the_calls_out() -> None:
    """21 calls out (the refused one among them) when the relay refused: the limit goes to 20."""
    p = Pacing(TicketLimiter(), concurrency=64, provider="relay")
    p.concurrency.limit, p.concurrency.slow_start = 21.8, False  # ×0.9: 19.6
    held = [p.slot("m", 0) for _ in range(21)]
    permits = [await h.__aenter__() for h in held]
    await held[0].__aexit__(None, None, None)
    busy = call(Verdict.RETRY, sent=True, status=503, error_class="overloaded", throttle=Throttle.OVERLOAD)
    assert permits[0] is not None
    await p.finish(permits[0], busy, used_tokens=None)
    assert p.concurrency.limit == 20.0
    for h in held[1:]:
        await h.__aexit__(None, None, None)


async def test_an_overload_heard_inside_its_place_counts_it_once() -> None:
    """22 calls out, the refused one still holding its place as the pace hears it: in slow start
    the limit goes to 21 (one under the count), not 22."""
    p = Pacing(TicketLimiter(), concurrency=64, provider="relay")
    p.concurrency.limit = 40.0
    held = [p.slot("m", 0) for _ in range(22)]
    permits = [await h.__aenter__() for h in held]
    busy = call(Verdict.RETRY, sent=True, status=503, error_class="overloaded", throttle=Throttle.OVERLOAD)
    assert permits[0] is not None
    await p.finish(permits[0], busy, used_tokens=None, in_place=True)
    assert p.concurrency.limit == 21.0
    for h in held:
        await h.__aexit__(None, None, None)


async def test_slots_beyond_the_concurrency_wait_for_a_free_one() -> None:
    p = pacing(TicketLimiter(), concurrency=1)
    inside, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with p.slot("m", 1):
            order.append("first in")
            inside.set()
            await release.wait()
        order.append("first out")

    async def second() -> None:
        await inside.wait()
        async with p.slot("m", 1):
            order.append("second in")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await inside.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["first in"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]


class DeadPaceLimiter(TicketLimiter):
    async def pace(self, key: str) -> PaceView:
        raise LimiterError("the shared rate limiter's Redis cannot be reached")


async def test_refresh_keeps_the_last_views_when_the_limiter_cannot_be_read() -> None:
    p = pacing(DeadPaceLimiter())
    async with p.slot("m", 1):
        pass
    assert await p.refresh() == {}  # no error: displays and the learned pace simply wait


async def test_a_stop_ends_the_wait_behind_the_limiter() -> None:
    """Lines queued behind a slow limit send nothing once the job stops, and leave the gate."""
    clock = [0.0]
    limiter = InProcessLimiter(Limits(rpm=60), clock=lambda: clock[0])  # one call a second
    p = Pacing(limiter, concurrency=8, provider="relay", adaptive=False)
    stop = asyncio.Event()
    async with p.slot("m", 0, stop=stop) as first:
        assert first is not None  # the burst lets the first go at once
    waiting = [asyncio.ensure_future(_enter(p, stop)) for _ in range(3)]
    await asyncio.sleep(0.01)  # all three reserved their places and sleep on them
    stop.set()
    assert await asyncio.gather(*waiting) == [None, None, None]  # none of them goes out
    assert p.in_flight == 0


async def test_waits_a_stop_ends_give_their_places_back() -> None:
    """The next job (or the resumed one) on the key starts where the last call sent, not behind
    the places of calls that were never made; so do the tokens they reserved."""
    clock = [0.0]
    limiter = InProcessLimiter(Limits(rpm=60, tpm=6000), clock=lambda: clock[0])  # 0.98/s, 100 tok/s
    p = Pacing(limiter, concurrency=8, provider="relay", adaptive=False)
    stop = asyncio.Event()
    async with p.slot("m", 10, stop=stop):
        pass
    state = limiter._keys["relay|m"]
    sent = (state.request_tat, state.token_tat)
    waiting = [asyncio.ensure_future(_enter(p, stop, tokens=10)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert state.request_tat > sent[0]  # three places reserved after the one sent
    waiting[1].cancel()  # one in the middle goes first: a hole, the others are still held
    await asyncio.gather(waiting[1], return_exceptions=True)
    assert state.request_tat > sent[0]
    stop.set()
    assert await asyncio.gather(*waiting[::2]) == [None, None]
    assert (state.request_tat, state.token_tat) == pytest.approx(sent)
    assert state.holes == {}


async def test_a_stop_ends_the_wait_for_a_place_in_the_gate_and_leaves_the_line() -> None:
    p = pacing(TicketLimiter(), concurrency=1)
    stop = asyncio.Event()
    holder = p.slot("m", 1)
    assert await holder.__aenter__() is not None
    waiting = [asyncio.ensure_future(_enter(p, stop)) for _ in range(2)]
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.gather(*waiting) == [None, None]
    await holder.__aexit__(None, None, None)
    assert p._gate.held == 0  # nobody in line was handed the place the holder gave back
    assert await _enter(p, asyncio.Event()) is not None


async def test_a_call_cancelled_once_handed_a_place_passes_it_to_the_next_in_line() -> None:
    p = pacing(TicketLimiter(), concurrency=1)
    holder = p.slot("m", 1)
    assert await holder.__aenter__() is not None
    first, second = (asyncio.ensure_future(_enter(p, asyncio.Event())) for _ in range(2))
    await asyncio.sleep(0)
    await holder.__aexit__(None, None, None)  # the place is handed to ``first``, not yet running
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is not None
    assert p._gate.held == 0


class CancelOnGrant(TicketLimiter):
    """Grants, and has the caller cancelled before it runs again: the race of a job's shutdown
    with a wait that just ended."""

    caller: asyncio.Task[object] | None = None

    async def acquire(self, key: str, tokens: int) -> Permit:
        assert self.caller is not None
        asyncio.get_running_loop().call_soon(self.caller.cancel)
        return await super().acquire(key, tokens)


async def test_a_grant_overtaken_by_the_callers_cancellation_is_given_back() -> None:
    """Its tokens are settled as unused (and, in Redis, a probe gate it held opens), and its
    place in the gate goes back: the permit is not dropped with the cancelled caller."""
    limiter = CancelOnGrant()
    p = pacing(limiter, concurrency=1)
    limiter.caller = asyncio.ensure_future(_enter(p, asyncio.Event(), tokens=7))
    with pytest.raises(asyncio.CancelledError):
        await limiter.caller
    assert limiter.events == [("settle", limiter.granted[0], 0)]
    assert p._gate.held == 0 and p.in_flight == 0


async def _enter(p: Pacing, stop: asyncio.Event, tokens: int = 0) -> Permit | None:
    async with p.slot("m", tokens, stop=stop) as permit:
        return permit


async def test_a_slot_asked_after_the_stop_is_refused_at_once() -> None:
    limiter = TicketLimiter()
    stop = asyncio.Event()
    stop.set()
    async with pacing(limiter).slot("m", 1, stop=stop) as permit:
        assert permit is None
    assert limiter.granted == []
