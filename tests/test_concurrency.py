"""The adaptive concurrency limit: each rule, whole runs against simulated relays, and the gate."""

from __future__ import annotations

import asyncio
import heapq
import random

import pytest

from workers.concurrency import AdaptiveGate, ConcurrencyState, ConcurrencyTuning, on_overload, on_sample


def test_slow_start_doubles_per_round_trip_up_to_the_ceiling() -> None:
    state = ConcurrencyState(ceiling=40)
    assert state.admitted == 16
    for i in range(16):
        on_sample(state, 0.05, in_flight=16, now=i * 0.001)
    assert state.admitted == 32
    for i in range(100):
        on_sample(state, 0.05, in_flight=40, now=1 + i * 0.001)
    assert state.admitted == 40


def test_an_idle_limit_does_not_grow() -> None:
    state = ConcurrencyState(ceiling=256)
    for i in range(100):
        on_sample(state, 0.05, in_flight=2, now=i * 0.01)
    assert state.admitted == 16


def test_overload_shrinks_once_per_round_trip_and_ends_slow_start() -> None:
    state = ConcurrencyState(ceiling=256, limit=30.0)
    on_sample(state, 0.05, in_flight=30, now=0.0)
    on_overload(state, 1.0)
    on_overload(state, 1.01)  # the same overload's other answers
    assert state.limit == pytest.approx(31 * 0.9)
    assert not state.slow_start
    on_overload(state, 1.2)
    assert state.limit == pytest.approx(31 * 0.81)


@pytest.mark.parametrize(
    ("limit", "refused_at", "expected"),
    [
        (21.8, 21, 20.0),  # just under the calls out when the relay refused (×0.9: 19.6)
        (22.3, 22, 21.0),
        (20.5, 25, 19.5),  # a count above the limit still takes one place off
        (30.0, 5, 27.0),  # one odd count takes off no more than the fixed cut
    ],
)
def test_an_overload_answer_aims_the_limit_just_under_the_calls_out(
    limit: float, refused_at: int, expected: float
) -> None:
    state = ConcurrencyState(ceiling=256, limit=limit, slow_start=False)
    on_overload(state, 1.0, in_flight=refused_at)
    assert state.limit == pytest.approx(expected)
    assert state.overloaded


def test_an_overload_answer_in_slow_start_cuts_to_the_calls_out_when_deeper() -> None:
    """Slow start runs past the cap for a round trip: the count says how far back it is."""
    state = ConcurrencyState(ceiling=256, limit=40.0, recent=0.05)
    on_overload(state, 1.0, in_flight=22)
    assert state.limit == pytest.approx(21.0)
    assert not state.slow_start
    on_overload(state, 1.01, in_flight=15)  # the same overload's other answers
    assert state.limit == pytest.approx(21.0)


def test_only_the_refusal_of_a_call_sent_after_the_last_cut_cuts_again() -> None:
    """The calls out when a cut was made are its batch; a call sent since is new evidence, even
    within the round trip (a slow start far past the cap comes down in milliseconds)."""
    state = ConcurrencyState(ceiling=256, limit=30.0, recent=0.05)
    on_overload(state, 1.0, in_flight=30, sent_at=0.999)
    assert state.limit == pytest.approx(27.0)
    on_overload(state, 1.001, in_flight=29, sent_at=0.998)  # out before the cut: already answered for
    assert state.limit == pytest.approx(27.0)
    on_overload(state, 1.002, in_flight=26, sent_at=1.0015)  # sent after it: the limit is still too high
    assert state.limit == pytest.approx(25.0)
    on_overload(state, 1.003, in_flight=25, sent_at=1.0025)
    assert state.limit == pytest.approx(24.0)
    assert state.decreases == 3
    on_overload(state, 1.004)  # no send time (a timeout): at most once a round trip, as before
    assert state.decreases == 3


def test_an_aimed_limit_probes_upwards_slowly() -> None:
    state = ConcurrencyState(ceiling=256, limit=21.0, slow_start=False)
    on_overload(state, 0.0, in_flight=21)
    for i in range(20):  # one round trip of calls
        on_sample(state, 0.05, in_flight=20, now=1 + i * 0.0025)
    assert state.limit == pytest.approx(20.1, abs=0.001)  # 0.1 a round trip


def test_latency_past_the_tolerance_shrinks_the_limit() -> None:
    state = ConcurrencyState(ceiling=256, limit=64.0)
    for i in range(20):
        on_sample(state, 0.05, in_flight=64, now=i * 0.01)
    before = state.limit
    on_sample(state, 0.5, in_flight=64, now=0.5)  # one stalled call is not a queue
    assert state.limit >= before
    for i in range(100):
        on_sample(state, 0.2, in_flight=64, now=1 + i * 0.3)
    assert state.limit < before * 0.5


def test_the_floor_and_the_ceiling_hold() -> None:
    state = ConcurrencyState(ceiling=8, tuning=ConcurrencyTuning(floor=2))
    assert state.admitted == 8
    for i in range(50):
        on_overload(state, float(i))
    assert state.admitted == 2


def simulate(
    *, max_concurrent: int | None, latency: float = 0.05, seconds: float = 30.0
) -> tuple[float, float]:
    """A client with unbounded demand; the relay answers 503 at once past ``max_concurrent``, and
    (unlimited) slows down by 0.5 ms per call past 100 in flight. Returns (calls answered per second
    after 5 s of warm-up, share of 503s then)."""
    state = ConcurrencyState(ceiling=512)
    events: list[tuple[float, int, bool, float]] = []  # (done at, seq, ok, rtt)
    now, seq, in_flight, ok, refused = 0.0, 0, 0, 0, 0
    while now < seconds:
        while in_flight < state.admitted:
            seq += 1
            over = max_concurrent is not None and in_flight >= max_concurrent
            slow = latency + 0.0005 * max(0, in_flight - 100)
            done = now + (0.001 if over else slow)
            heapq.heappush(events, (done, seq, not over, done - now))
            in_flight += 1
        at, _, good, rtt = heapq.heappop(events)
        now, in_flight = at, in_flight - 1
        if good:
            on_sample(state, rtt, in_flight=in_flight + 1, now=now)
        else:
            on_overload(state, now, in_flight=in_flight + 1, sent_at=now - rtt)
        if now > 5:
            ok, refused = ok + good, refused + (not good)
    return ok / (seconds - 5), refused / max(1, ok + refused)


def simulate_client_time(
    *, cap: int = 20, latency: float = 0.05, before: float = 0.0005, after: float = 0.001, seed: int = 1
) -> tuple[float, float]:
    """Against a relay refusing past ``cap``, a client whose own work around each call (sending,
    reading the answer: exponential, ``before`` and ``after`` seconds on average) holds places the
    relay does not count, as batcher's event loop does; the relay takes 0-3 ms of its own beyond
    ``latency``. 30 s; returns (calls answered per second after 5 s, share of 503s then)."""
    rng, state = random.Random(seed), ConcurrencyState(ceiling=512)
    events: list[tuple[float, int, str, float]] = []  # (at, seq, what, sent at)
    now, seq, out, at_relay, ok, refused = 0.0, 0, 0, 0, 0, 0
    while now < 30:
        while out < state.admitted:
            out, seq = out + 1, seq + 1
            heapq.heappush(events, (now + rng.expovariate(1 / before), seq, "arrive", now))
        now, n, what, sent = heapq.heappop(events)
        if what == "arrive" and at_relay >= cap:
            heapq.heappush(events, (now + 0.001 + rng.expovariate(1 / after), n, "refused", sent))
        elif what == "arrive":
            at_relay += 1
            heapq.heappush(events, (now + latency + rng.uniform(0, 0.003), n, "answered", sent))
        elif what == "answered":
            at_relay -= 1
            heapq.heappush(events, (now + rng.expovariate(1 / after), n, "read", sent))
        else:
            out -= 1
            if what == "read":
                on_sample(state, now - sent, in_flight=out + 1, now=now)
            else:
                on_overload(state, now, in_flight=out + 1, sent_at=sent)
            if now > 5:
                ok, refused = ok + (what == "read"), refused + (what == "refused")
    return ok / 25, refused / max(1, ok + refused)


def test_a_relay_refusing_past_20_in_flight_is_used_at_90_percent_with_2_percent_503s() -> None:
    rate, refused = simulate(max_concurrent=20)
    assert rate >= 0.9 * 20 / 0.05
    assert refused <= 0.02


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_client_whose_own_work_the_relay_does_not_count_still_gets_92_percent(seed: int) -> None:
    """The relay counts fewer of our calls than we do, so its cap is met only when none of ours is
    in our own hands: a limit aimed under the count refused (not cut by a tenth) stays near it.
    In this simulation a fixed ×0.9 cut got 367 calls/s with 0.36 % 503s; aimed, 377 with 0.47 %."""
    rate, refused = simulate_client_time(seed=seed)
    assert rate >= 0.92 * 20 / 0.05
    assert refused <= 0.01


def test_an_unlimited_relay_gets_far_more_than_the_start() -> None:
    rate, refused = simulate(max_concurrent=None)
    assert rate >= 100 / 0.05  # a hundred calls in flight at least
    assert refused == 0


async def test_gate_admits_the_limit_and_wakes_waiters_when_it_grows() -> None:
    state = ConcurrencyState(ceiling=10, limit=2.0)
    gate = AdaptiveGate(state)
    inside = 0
    peak = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal inside, peak
        async with gate:
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(call()) for _ in range(6)]
    await asyncio.sleep(0)
    assert (gate.held, peak) == (2, 2)
    state.limit = 5.0
    gate.wake()
    await asyncio.sleep(0)
    assert gate.held == 5
    release.set()
    await asyncio.gather(*tasks)
    assert (gate.held, peak) == (0, 5)


async def test_gate_hands_a_freed_place_to_the_first_waiter_not_to_a_later_arrival() -> None:
    """Chunks of one job share a gate (``workers.runtime``): a later chunk's calls must not take the
    places an earlier chunk's waiting calls were woken for, or those wait to the job's end."""
    gate = AdaptiveGate(ConcurrencyState(ceiling=1, limit=1.0))
    await gate.__aenter__()
    first = asyncio.create_task(gate.__aenter__())
    await asyncio.sleep(0)
    await gate.__aexit__(None, None, None)  # the place goes to ``first``, which has not run yet
    assert not gate.try_enter()
    await first
    assert gate.held == 1


async def test_gate_waiter_cancelled_after_its_wake_up_passes_the_place_on() -> None:
    gate = AdaptiveGate(ConcurrencyState(ceiling=1, limit=1.0))
    await gate.__aenter__()
    first = asyncio.create_task(gate.__aenter__())
    second = asyncio.create_task(gate.__aenter__())
    await asyncio.sleep(0)
    await gate.__aexit__(None, None, None)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert gate.held == 1


async def test_gate_cancelled_waiter_leaves_no_trace() -> None:
    gate = AdaptiveGate(ConcurrencyState(ceiling=1))
    async with gate:
        waiter = asyncio.create_task(gate.__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert gate.held == 0
    async with gate:
        assert gate.held == 1
