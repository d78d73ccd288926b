"""batcher.dashboard.tally: resampling, settling ids, and rates from successive looks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from batcher.dashboard import tally as tally_module
from batcher.dashboard.tally import SETTLE_S, WINDOW_S, Sampler, Tally, model_costs, provider_costs, resample
from jobs import store as q
from jobs.db import Store
from jobs.records import Usage
from tests.test_store_dashboard import LINES, SECONDS, _job, _run
from workers.prices import ListPrice, PriceBook


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_resample_merges_seconds_and_fills_idle_ones_with_zeros() -> None:
    series = resample({100: [2, 1, 10], 101: [4, 0, 20], 105: [6, 0, 0]}, max_points=3)
    assert series.width_s == 2
    assert series.t == [100, 102, 104]
    assert series.requests == [3.0, 0.0, 3.0]
    assert series.rate_limited == [0.5, 0.0, 0.0]
    assert series.tokens == [15.0, 0.0, 0.0]


def test_resample_of_nothing_is_empty() -> None:
    assert resample({}, 10).t == []


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        ([(0.0, 0)], None),  # one look: no rate yet
        ([(0.0, 0), (0.5, 50)], None),  # under a second apart
        ([(0.0, 0), (2.0, 20)], 10.0),
        ([(0.0, 0), (10.0, 100), (WINDOW_S + 20.0, 400)], 7.5),  # the look at 0 fell out of the window
    ],
)
def test_sampler_rate_is_lines_per_second_over_the_window(
    looks: list[tuple[float, int]], expected: float | None
) -> None:
    clock = Clock()
    sampler = Sampler(clock=clock)
    for at, done in looks:
        clock.now = 1000.0 + at
        rate = sampler.rate(1, done)
    assert rate.lines_per_s == expected


def _ran_job(store: Store, n: int) -> int:
    job_id = _job(store, n)
    _run(store, job_id)
    return job_id


def test_tally_reads_the_job_once_then_what_is_new(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    clock = Clock()
    job_id = _ran_job(store, LINES)
    tally = Tally(job_id, clock=clock)
    with store.session() as s:
        tally.refresh(s)
        last = max(b.last_id for b in q.timeline(s, job_id))
    assert tally.sums() == (LINES, 0, 15 * LINES)
    assert tally.settled_id == last  # calls that started long ago are settled at the first look
    clock.now += SETTLE_S + 1
    with store.session() as s:
        tally.refresh(s)  # settles what the first look saw
        tally.refresh(s)
    assert tally.sums() == (LINES, 0, 15 * LINES)
    assert len(tally.series().t) == SECONDS
    assert [m.model for m in tally.models()] == ["gpt-4o", "gpt-4o-mini"]
    assert sum(m.calls for m in tally.models()) == LINES
    store.close()


def test_a_late_commit_below_the_last_id_is_still_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids above the settled one are summed again at each look: an attempt that lands late counts."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    clock = Clock()
    job_id = _ran_job(store, 10)
    monkeypatch.setattr(tally_module, "OLD_S", 1e9)  # these calls are recent: nothing settles at once
    tally = Tally(job_id, clock=clock)
    with store.session() as s:
        tally.refresh(s)
        # as if a transaction holding ids in the fresh range committed after the look
        s.connection().exec_driver_sql(
            "UPDATE attempt SET total_tokens = 30 WHERE id = (SELECT max(id) FROM attempt)"
        )
    with store.session() as s:
        tally.refresh(s)
    assert tally.sums()[2] == 15 * 9 + 30
    store.close()


def test_provider_costs_sum_each_routes_models_at_their_prices() -> None:
    book = PriceBook(prices={"a": ListPrice(input=Decimal(1), output=Decimal(2))})
    rows = [
        q.ModelUsage("a", 2, Usage(1_000_000, 0), provider="relay-x/KX …1111"),
        q.ModelUsage("a", 1, Usage(0, 1_000_000), provider="relay-y/KY …2222"),
        q.ModelUsage("mystery", 4, Usage(5, 5), provider="relay-y/KY …2222"),
        q.ModelUsage("a", 3, Usage(1_000_000, 1_000_000)),
    ]
    got = {p.provider: (p.calls, p.tokens, p.cost_usd, p.unpriced) for p in provider_costs(rows, book, None)}
    assert got == {
        "default": (3, 2_000_000, Decimal(3), ()),
        "relay-x/KX …1111": (2, 1_000_000, Decimal(1), ()),
        "relay-y/KY …2222": (5, 1_000_010, Decimal(2), ("mystery",)),
    }
    by_model = sum(c.cost_usd or Decimal(0) for c in model_costs(rows, book, None))
    assert sum(p.cost_usd or Decimal(0) for p in provider_costs(rows, book, None)) == by_model


def test_models_merge_their_providers() -> None:
    tally = Tally(1)
    tally._settled.add(
        [], [q.ModelUsage("a", 1, Usage(1, 1), provider="p/k"), q.ModelUsage("a", 2, Usage(2, 2))]
    )
    assert [(m.model, m.calls, m.provider) for m in tally.models()] == [("a", 3, "")]
    assert [m.provider for m in tally.routed()] == ["", "p/k"]
