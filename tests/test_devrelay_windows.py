"""The relay's counting algorithms on a given clock: what each admits, and the wait it names."""

from __future__ import annotations

import pytest

from batcher.devrelay.windows import FixedWindow, LimitMode, SlidingLog, TokenBucket, new_window


def run(window: object, calls: list[tuple[float, float]]) -> list[float | None]:
    """The answer to each (time, units) call, in order."""
    return [window.take(now, units) for now, units in calls]  # type: ignore[attr-defined]


def test_fixed_window_resets_on_the_boundary_and_allows_twice_the_limit_across_it() -> None:
    w = FixedWindow(limit=2, window=1.0)
    answers = run(w, [(10.5, 1), (10.9, 1), (10.95, 1), (11.0, 1), (11.01, 1), (11.02, 1)])
    assert answers[:2] == [None, None]
    assert answers[2] == pytest.approx(0.05)  # until 11.0
    assert answers[3:5] == [None, None]  # 4 calls in 0.11 s: the fixed window's known weakness
    assert answers[5] == pytest.approx(0.98)


def test_sliding_log_counts_any_window_and_names_when_the_oldest_leaves() -> None:
    w = SlidingLog(limit=2, window=1.0)
    answers = run(w, [(10.5, 1), (10.9, 1), (11.0, 1), (11.5, 1), (11.6, 1)])
    assert answers[:2] == [None, None]
    assert answers[2] == pytest.approx(0.5)  # 10.5 leaves at 11.5
    assert answers[3] is None
    assert answers[4] == pytest.approx(0.3)  # 10.9 leaves at 11.9


def test_sliding_log_weighs_tokens() -> None:
    w = SlidingLog(limit=100, window=1.0)
    assert run(w, [(0.0, 60), (0.2, 30), (0.4, 30)]) == [None, None, pytest.approx(0.6)]
    assert w.remaining(0.4) == 10
    assert w.remaining(1.0) == 70


def test_token_bucket_allows_one_burst_then_the_rate() -> None:
    w = TokenBucket(limit=10, window=1.0)  # 10 a second
    answers = run(w, [(0.0, 1)] * 10 + [(0.0, 1), (0.1, 1), (0.1, 1)])
    assert answers[:10] == [None] * 10
    assert answers[10] == pytest.approx(0.1)
    assert answers[11] is None
    assert answers[12] == pytest.approx(0.1)


@pytest.mark.parametrize("mode", list(LimitMode))
def test_a_call_larger_than_the_limit_goes_when_nothing_else_is_counted(mode: LimitMode) -> None:
    w = new_window(mode, 10, 1.0)
    assert w.take(0.0, 50) is None


@pytest.mark.parametrize("mode", list(LimitMode))
def test_give_back_undoes_the_last_take(mode: LimitMode) -> None:
    w = new_window(mode, 2, 1.0)
    w.take(0.0, 1)
    w.take(0.0, 1)
    assert w.take(0.0, 1) is not None
    w.give_back(1)
    assert w.take(0.0, 1) is None


@pytest.mark.parametrize(
    ("mode", "calls", "reset"),
    [
        (LimitMode.FIXED, [0.25], 0.5),  # the window ends at 1.0
        (LimitMode.SLIDING, [0.25, 0.5], 1.0),  # the newest must leave
        (LimitMode.BUCKET, [0.5, 0.5], 0.2),  # 2 of 10 to refill at 10/s
    ],
)
def test_reset_in(mode: LimitMode, calls: list[float], reset: float) -> None:
    w = new_window(mode, 10, 1.0)
    for at in calls:
        w.take(at, 1)
    assert w.reset_in(0.5) == pytest.approx(reset)
