"""The in-process limiter: GCRA arithmetic pinned by tables, pacing and cooldown on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from workers.aimd import AimdTuning
from workers.ratelimit import (
    InProcessLimiter,
    Limits,
    Place,
    gcra_refund,
    gcra_reserve,
    give_back_place,
    header_pause,
    parse_reset,
    window_full,
)


@pytest.mark.parametrize(
    ("tat", "now", "units", "rate", "burst", "expected_tat", "expected_wait"),
    [
        (0.0, 100.0, 1, 10.0, 0.0, 100.1, 0.0),  # empty bucket: go now
        (100.1, 100.0, 1, 10.0, 0.0, 100.2, 0.1),  # one ahead: wait one interval
        (100.5, 100.0, 1, 10.0, 0.0, 100.6, 0.5),
        (100.5, 100.0, 1, 10.0, 1.0, 100.6, 0.0),  # a second of burst absorbs it
        (101.0, 100.0, 1, 10.0, 0.5, 101.1, 0.6),
        (0.0, 100.0, 5000, 1000.0, 1.0, 105.0, 0.0),  # bigger than the burst: still granted at once
        (102.0, 100.0, 5000, 1000.0, 1.0, 107.0, 2.0),  # ... after what is ahead of it
    ],
)
def test_gcra_reserve_table(
    tat: float, now: float, units: float, rate: float, burst: float, expected_tat: float, expected_wait: float
) -> None:
    new_tat, wait = gcra_reserve(tat, now, units=units, rate=rate, burst=burst)
    assert new_tat == pytest.approx(expected_tat)
    assert wait == pytest.approx(expected_wait)


@pytest.mark.parametrize(("tat", "units", "rate", "expected"), [(10.0, 5, 10.0, 9.5), (10.0, -5, 10.0, 10.5)])
def test_gcra_refund_table(tat: float, units: float, rate: float, expected: float) -> None:
    assert gcra_refund(tat, units=units, rate=rate) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tat", "given_back", "holes", "expected_tat", "expected_holes"),
    [
        (4.0, (3.0, 4.0), {}, 3.0, {}),  # the last place: the TAT moves back over it
        (4.0, (2.0, 3.0), {}, 4.0, {3.0: 2.0}),  # one still held after it: kept as a hole
        (4.0, (3.0, 4.0), {3.0: 2.0, 2.0: 1.0}, 1.0, {}),  # the last one closes the holes before it
        (4.0, (3.0, 4.0), {2.0: 1.0}, 3.0, {2.0: 1.0}),  # ... not past a place still held (2 to 3)
    ],
)
def test_give_back_place_table(
    tat: float,
    given_back: tuple[float, float],
    holes: dict[float, float],
    expected_tat: float,
    expected_holes: dict[float, float],
) -> None:
    assert give_back_place(tat, Place(*given_back), holes) == expected_tat
    assert holes == expected_holes


class FakeClock:
    """A clock that asyncio.sleep advances: tests run instantly and exactly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        real_sleep = asyncio.sleep

        async def fake_sleep(delay: float, result: object = None) -> object:
            self.sleeps.append(delay)
            self.now += delay
            await real_sleep(0)
            return result

        monkeypatch.setattr(asyncio, "sleep", fake_sleep)

    def __call__(self) -> float:
        return self.now


async def test_in_process_limiter_spaces_requests_at_rpm(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(rpm=600 / 0.98), clock=clock)  # 600 after the headroom
    starts = []
    for _ in range(5):
        await limiter.acquire("k", 0)
        starts.append(clock.now)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.1, 0.1, 0.1, 0.1]


async def test_in_process_limiter_paces_tokens_and_refunds_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(tpm=60_000), clock=clock)  # 1000 tokens/s
    permit = await limiter.acquire("k", 2000)
    await limiter.settle(permit, 500)  # used 500 of the 2000 reserved
    start = clock.now
    await limiter.acquire("k", 1000)
    assert clock.now - start == pytest.approx(0.5)


async def test_in_process_limiter_cooldown_pauses_every_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(), clock=clock)
    await limiter.cooldown("k", 3.0)
    await limiter.cooldown("k", 1.0)  # a shorter pause never shortens the longer one
    start = clock.now
    await asyncio.gather(limiter.acquire("k", 1), limiter.acquire("k", 1))
    assert clock.now - start == pytest.approx(3.0)
    other = clock.now
    await limiter.acquire("other", 1)
    assert clock.now == other


async def test_in_process_limiter_unlimited_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(), clock=clock)
    for _ in range(100):
        await limiter.acquire("k", 10_000)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("2.5", 2.5),
        ("soon", None),
        ("1x", None),
    ],
)
def test_parse_reset_table(value: str, expected: float | None) -> None:
    assert parse_reset(value) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, 2.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s"}, 60.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2h"}, 60.0),  # capped
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "3s",
            },
            3.0,
        ),
    ],
)
def test_header_pause_only_lowers_the_pace(headers: dict[str, str], expected: float | None) -> None:
    assert header_pause(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, False),
        ({"x-ratelimit-remaining-requests": "3"}, False),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}, True),
        ({"x-ratelimit-remaining-tokens": "0"}, False),  # tokens are paced by --tpm, not found
    ],
)
def test_window_full_table(headers: dict[str, str], expected: bool) -> None:
    assert window_full(headers) is expected


async def test_in_process_limiter_unpaced_until_a_429_then_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(), clock=clock)
    for _ in range(20):
        permit = await limiter.acquire("k", 0)
        await limiter.settle(permit, 0, ok=True)
    assert clock.sleeps == []
    await limiter.limited("k", None)
    assert (await limiter.pace("k")).rate is None  # one 429 among 21 calls: noise
    await limiter.limited("k", None)  # two: the share grows with the rate
    pace = await limiter.pace("k")
    rate = AimdTuning().decrease * 20  # of the 20 that succeeded this second
    assert pace.rate == pytest.approx(rate)
    assert pace.learned
    start = clock.now
    for _ in range(3):
        await limiter.acquire("k", 0)
    assert clock.now - start == pytest.approx(2 / rate)


async def test_in_process_limiter_starts_from_a_learned_pace_below_the_rpm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    assert (await InProcessLimiter(Limits(learned={"k": 5.0}), clock=clock).pace("k")).rate == 5.0
    capped = await InProcessLimiter(Limits(rpm=60, learned={"k": 5.0}), clock=clock).pace("k")
    assert capped.rate == pytest.approx(0.98)
    assert not capped.learned


async def test_in_process_limiter_a_pause_voids_places_reserved_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a pause the waiting callers reserve again from its end, spaced at the pace:
    the places they held before it would otherwise all fall due at once (a burst)."""
    clock = FakeClock(monkeypatch)
    limiter = InProcessLimiter(Limits(rpm=600 / 0.98), clock=clock)  # one per 0.1 s
    tasks = [asyncio.create_task(limiter.acquire("k", 0)) for _ in range(5)]
    await asyncio.sleep(0)  # five places reserved: now, +0.1, ... +0.4
    until = clock.now + 1.0
    await limiter.cooldown("k", 1.0)
    await asyncio.gather(*tasks)
    state = limiter._keys["k"]
    assert state.request_tat == pytest.approx(until + 0.4, abs=0.11)  # four places after the pause
    assert state.request_tat > until
