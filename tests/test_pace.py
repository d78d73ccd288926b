"""The pace snapshot: recent rates from one-second buckets, the limit in force, and how it reads."""

from __future__ import annotations

import pytest

from workers.pace import PaceCounters, PaceSnapshot, limit_in_force
from workers.ratelimit import PaceView


def snapshot(**changes: object) -> PaceSnapshot:
    values: dict[str, object] = {
        "requests_per_s": 12.0,
        "tokens_per_s": 3400.0,
        "limit_rps": 98.0,
        "limit_source": "learned",
        "in_flight": 5,
        "concurrency": 16,
        "ceiling": 256,
        "rate_limited": 3,
        "overloaded": 0,
        "cooldowns": 0,
        "cooldown_s": 0.0,
    }
    return PaceSnapshot(**(values | changes))  # type: ignore[arg-type]


def test_rates_cover_the_last_seconds_only() -> None:
    counters = PaceCounters()
    for i in range(100):  # 10 calls a second for 10 s, 50 tokens each
        counters.count(1, 50, now=100 + i / 10)
    calls, tokens = counters.rates(110.0)
    assert calls == pytest.approx(10.0, rel=0.25)
    assert tokens == pytest.approx(500.0, rel=0.25)
    assert counters.rates(200.0) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ({}, (None, "none")),
        ({"a": PaceView(None, None, False, 0.0, 0)}, (None, "none")),
        ({"a": PaceView(98.0, 98.0, False, 0.0, 0)}, (98.0, "configured")),
        (
            {"a": PaceView(40.0, None, True, 0.0, 1), "b": PaceView(10.0, None, True, 0.0, 1)},
            (50.0, "learned"),
        ),
    ],
)
def test_limit_in_force(views: dict[str, PaceView], expected: tuple[float | None, str]) -> None:
    assert limit_in_force(views) == expected


def test_describe_reads_as_one_line() -> None:
    assert snapshot().describe() == (
        "12.0 req/s · 3400 tok/s · limit 98.0/s learned · in flight 5/16 of 256 · 429s 3"
    )
    text = snapshot(limit_rps=None, concurrency=None, overloaded=2, cooldowns=1, cooldown_s=1.5).describe()
    assert text == (
        "12.0 req/s · 3400 tok/s · limit unpaced · in flight 5 of 256 · 429s 3 · overloaded 2"
        " · cooldowns 1 · paused 1.5s"
    )


def test_to_dict_for_json() -> None:
    data = snapshot().to_dict()
    assert data["limit_rps"] == 98.0
    assert data["limit_source"] == "learned"
    assert set(data) == {
        "requests_per_s",
        "tokens_per_s",
        "limit_rps",
        "limit_source",
        "in_flight",
        "concurrency",
        "ceiling",
        "rate_limited",
        "overloaded",
        "cooldowns",
        "cooldown_s",
    }
