"""The AIMD pace on a given clock: each rule, then whole runs against simulated relays."""

from __future__ import annotations

import heapq
import random

import pytest

from batcher.devrelay.windows import LimitMode, new_window
from workers.aimd import (
    AimdTuning,
    Goodput,
    RateState,
    Refusals,
    ceiling_of,
    increase_per_second,
    on_limited,
    on_success,
    on_wait,
)


def test_ceiling_keeps_headroom_below_an_explicit_rpm() -> None:
    assert ceiling_of(6000) == pytest.approx(98.0)
    assert ceiling_of(None) is None


def test_unpaced_until_the_first_429_which_sets_the_pace_from_the_goodput() -> None:
    state = RateState()
    for i in range(300):  # 150 successes a second for two seconds
        on_success(state, 100 + i / 150)
    assert state.rate is None
    assert any([on_limited(state, 102.0 + i / 1000) for i in range(10)])  # the limit's burst of 429s
    assert state.rate == pytest.approx(AimdTuning().decrease * 150, rel=0.02)


def test_the_first_pace_found_doubles_until_the_next_429() -> None:
    """The first burst's goodput misses the calls still out when the 429s came: it is a floor."""
    state = RateState()
    for i in range(60):
        on_success(state, 100 + i / 60)
    on_limited(state, 101.0)
    assert on_limited(state, 101.0)
    found = state.rate
    assert found is not None and state.probing
    for _ in range(10):
        on_wait(state, 101.1)
        on_success(state, 101.1)
    assert state.rate == pytest.approx(found + 10)  # one per success: it doubles per second
    on_limited(state, 102.2)
    on_limited(state, 102.2)
    assert (
        state.decreases == 2 and not state.probing
    )  # the next congestion event ends it: additive from there


def test_a_429_before_any_success_starts_at_the_default() -> None:
    state = RateState()
    assert not on_limited(state, 5.0)  # one 429 alone proves nothing
    assert on_limited(state, 5.0)
    assert state.rate == pytest.approx(AimdTuning().unknown_start)


def test_one_decrease_per_congestion_event() -> None:
    state = RateState(rate=100.0)
    on_limited(state, 10.0)
    assert on_limited(state, 10.0)
    assert not on_limited(state, 10.5)  # the same event's other 429s
    down = AimdTuning().decrease
    assert state.rate == pytest.approx(100 * down)
    assert on_limited(state, 11.1)
    assert state.rate == pytest.approx(100 * down * down)


def test_a_429_at_the_ceiling_steps_down_a_little() -> None:
    state = RateState(ceiling=98.0)
    assert state.rate == 98.0
    on_limited(state, 1.0)
    on_limited(state, 1.0)
    assert state.rate == pytest.approx(98.0 * 0.98)


def test_a_429_at_the_ceiling_steps_down_from_the_pace_not_from_a_stalled_second() -> None:
    """A process that stalled for half a second has a low goodput; the relay's limit did not move."""
    state = RateState(ceiling=98.0)
    for i in range(49):  # 49 successes in the last second: half the pace
        on_success(state, 10.0 + i / 49)
    on_limited(state, 11.05)
    on_limited(state, 11.05)
    assert state.rate == pytest.approx(98.0 * 0.98)


@pytest.mark.parametrize("per_second", [300, 10])
@pytest.mark.parametrize("rate", [None, 200.0])
def test_429s_that_do_not_grow_with_the_rate_leave_the_pace_alone(
    rate: float | None, per_second: int
) -> None:
    """One call in a hundred refused at random (a gateway's upstream key, llmock's fault rate)."""
    state = RateState(rate=rate)
    for i in range(3000):  # 3,000 calls, ten seconds of them at 300 a second, 300 s at 10
        now = 100 + i / per_second
        on_wait(state, now)
        if i % 100 == 99:
            assert not on_limited(state, now)
        else:
            on_success(state, now)
    assert state.decreases == 0
    assert state.rate is None if rate is None else state.rate >= rate


def test_429s_seconds_apart_at_a_low_rate_are_the_limits() -> None:
    """At 10 req/s two 429s three seconds apart are 2 of 32 calls: the rate, not noise.

    Counted over a second or two they were never two at once until the pace was far past the limit.
    """
    state = RateState(rate=10.0)
    for i in range(10):
        on_success(state, 100 + i / 10)
    assert not on_limited(state, 101.0)
    for i in range(30):
        on_success(state, 101.1 + i / 10)
    assert on_limited(state, 104.1)
    assert state.decreases == 1


def test_429s_are_judged_over_the_recent_calls_not_the_recent_seconds() -> None:
    """At 10 calls a second a bucket of recent calls lasts ten seconds (100 calls); at 300, one second."""
    tuning, slow, fast = AimdTuning(), Refusals(), Refusals()
    for i in range(200):
        slow.count(10 + i / 10, refused=False, tuning=tuning)  # twenty seconds of 10 calls a second
    for i in range(100):
        fast.count(10 + i / 300, refused=False, tuning=tuning)
    assert (slow.last_calls, slow.calls) == (100, 100)  # 100 calls in ten seconds: closed at the 101st
    assert (fast.last_calls, fast.calls) == (0, 100)  # a third of a second: still open
    for i in range(300):
        fast.count(11 + i / 300, refused=False, tuning=tuning)
    assert (fast.last_calls, fast.calls) == (100, 300)  # closed after a second, as many as came in it


@pytest.mark.parametrize(
    ("calls", "refused", "rate_bound"), [(60, 2, True), (100, 2, False), (100, 3, True), (5, 1, False)]
)
def test_a_429_share_of_3_percent_and_two_429s_are_the_limits(
    calls: int, refused: int, rate_bound: bool
) -> None:
    tuning, window = AimdTuning(), Refusals()
    for i in range(calls):
        window.count(10 + i / 100, refused=i < refused, tuning=tuning)
    assert window.grows_with_rate(tuning) is rate_bound


def test_a_decrease_clears_the_recent_429s() -> None:
    """The 429s that lowered the pace were one congestion event: the next decrease needs its own."""
    state = RateState(rate=10.0)
    for i in range(20):
        on_success(state, 100 + i / 10)
    on_limited(state, 102.0)
    assert on_limited(state, 102.0)
    for i in range(20):
        on_success(state, 102.1 + i / 10)
    assert not on_limited(state, 104.1)  # one 429 past the hold: alone since the decrease
    assert on_limited(state, 104.2)
    assert state.decreases == 2


def test_a_key_idle_for_half_a_minute_forgets_its_recent_429s() -> None:
    """Its old 429s are not its pace now (a job that ended, a long pause)."""
    tuning, window = AimdTuning(), Refusals()
    for i in range(60):
        window.count(10 + i / 10, refused=i < 2, tuning=tuning)
    assert window.grows_with_rate(tuning)
    window.count(10 + 5.9 + 29.0, refused=True, tuning=tuning)
    assert window.grows_with_rate(tuning)  # not idle long enough
    window.count(10 + 5.9 + 29.0 + 30.0, refused=True, tuning=tuning)
    assert (window.last_calls, window.calls, window.refused) == (0, 1, 1)
    assert not window.grows_with_rate(tuning)


def test_increase_only_while_the_pace_binds_and_never_past_the_ceiling() -> None:
    state = RateState(rate=50.0, ceiling=50.3)
    on_success(state, 10.0)
    assert state.rate == 50.0  # nobody waited for the pace: proves nothing
    on_wait(state, 10.0)
    for i in range(50):
        on_success(state, 10.0 + i / 50)
    assert state.rate == pytest.approx(50.3)
    state = RateState(rate=50.0)
    on_wait(state, 10.0)
    for i in range(50):  # one second of successes at 50/s
        on_success(state, 10.0 + i / 50)
    step = increase_per_second(50.0, AimdTuning())
    assert state.rate == pytest.approx(50.0 + step, rel=0.01)  # one second's worth


@pytest.mark.parametrize(("rate", "expected"), [(10.0, 0.025), (100.0, 2.5), (1000.0, 25.0), (0.2, 0.001)])
def test_the_climb_leaves_about_200_calls_between_two_probes_past_the_limit(
    rate: float, expected: float
) -> None:
    """(1 - 0.95) x rate a second at most 2.5 % of the pace: 10 req/s climbs 0.5 req/s in 20 s."""
    assert increase_per_second(rate, AimdTuning()) == pytest.approx(expected)


def test_a_full_window_holds_the_pace() -> None:
    state = RateState(rate=50.0)
    on_wait(state, 1.0)
    on_success(state, 1.0, window_full=True)
    assert state.rate == 50.0


def test_goodput_is_the_last_full_second() -> None:
    g = Goodput(start=0.0)
    for i in range(80):
        g.tick(i / 80)
    g.tick(1.0)
    assert g.rate(1.1) == pytest.approx(80.0)
    assert g.rate(5.0) == 0.0  # nothing for seconds: no goodput to speak of


def test_goodput_slides_over_the_last_second() -> None:
    """Half into a second that has 60 so far after one of 80: about the last second held 100."""
    g = Goodput(start=0.0)
    for i in range(80):
        g.tick(i / 80)
    for i in range(60):
        g.tick(1.0 + i / 120)
    assert g.rate(1.5) == pytest.approx(60 + 80 * 0.5)
    assert g.rate(1.9) == pytest.approx(80.0)  # never below the last full second


def simulate(
    mode: LimitMode,
    *,
    limit: int = 100,
    latency: float = 0.03,
    seconds: float = 60.0,
    rpm: float | None = None,
) -> tuple[float, float]:
    """A client with unbounded demand (at most 1,000 calls/s) against a relay allowing ``limit``/s.

    Returns (successes per second after a 10 s warm-up / limit, share of calls answered 429 then).
    """
    window = new_window(mode, limit, 1.0)
    state = RateState(ceiling=ceiling_of(rpm))
    answers: list[tuple[float, bool]] = []
    tat, now, step = 0.0, 0.0, 0.001
    ok = limited = 0
    while now < seconds:
        while answers and answers[0][0] <= now:
            at, good = heapq.heappop(answers)
            if good:
                on_success(state, at)
            else:
                on_limited(state, at)
        gap = 1 / state.rate if state.rate else 0.001
        while tat <= now:
            admitted = window.take(now + latency / 2, 1) is None
            heapq.heappush(answers, (now + latency, admitted))
            if now > 10:
                ok, limited = ok + admitted, limited + (not admitted)
            tat = max(tat, now - gap) + gap
        on_wait(state, now)
        now += step
    return ok / (seconds - 10) / limit, limited / max(1, ok + limited)


@pytest.mark.parametrize("limit", [100, 10, 5])
@pytest.mark.parametrize("mode", list(LimitMode))
def test_discovery_finds_at_least_90_percent_with_at_most_3_percent_429s(mode: LimitMode, limit: int) -> None:
    """At 5 and 10 req/s too: a relay user behind LiteLLM or a small key's limit."""
    used, refused = simulate(mode, limit=limit)
    assert used >= 0.90
    assert refused <= 0.03


@pytest.mark.parametrize("mode", list(LimitMode))
def test_a_known_limit_is_used_fully(mode: LimitMode) -> None:
    used, refused = simulate(mode, rpm=6000)
    assert used >= 0.97
    assert refused <= 0.01


def simulate_noise(*, share: float, in_flight: int, latency: float, seconds: float = 300.0) -> float:
    """A relay with no limit that refuses ``share`` of the calls at random (seeded), and a client
    holding ``in_flight`` calls: the successes per second over what the relay could answer."""
    rnd, state = random.Random(7), RateState()
    answers: list[tuple[float, bool]] = []
    tat, now, out, ok = 0.0, 0.0, 0, 0
    while now < seconds:
        while answers and answers[0][0] <= now:
            at, good = heapq.heappop(answers)
            out, ok = out - 1, ok + good
            on_success(state, at) if good else on_limited(state, at)
        gap = 1 / state.rate if state.rate else 0.0
        while out < in_flight and tat <= now:
            heapq.heappush(answers, (now + latency * rnd.uniform(0.8, 1.2), rnd.random() >= share))
            out, tat = out + 1, max(tat, now - gap) + gap
        if tat > now:
            on_wait(state, now)
        now += 0.001
    return ok / seconds / (in_flight / latency)


@pytest.mark.parametrize("latency", [1.6, 0.5, 0.16])
def test_one_percent_of_429s_at_random_costs_a_slow_relay_little(latency: float) -> None:
    """10–100 calls a second, 1 % refused at random: the pace stays near what the relay answers.

    A window of 50–100 calls got 90 % at 32 calls a second here: two random 429s fell in it
    together often enough to lower the pace every 15 s.
    """
    assert simulate_noise(share=0.01, in_flight=16, latency=latency) >= 0.95
