"""The usage report from the store's sums equals the report that walks every call, on both backends.

The calls mix what a report must tell apart: answered calls with usage, 429s without, calls sent
with no answer (the unknown kind, on a line that later succeeded and on one that failed), a
packed call whose lines share a call id, two providers, two days, two tagged jobs, and calls both
folded into the rollup (started long ago) and read live (just now).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batcher.usage import Report, usage_report
from batcher.usage_groups import grouped_report
from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.models import JobStatus
from jobs.options import JobOptions
from jobs.records import AttemptRecord, LineResult, Usage
from jobs.store.rollup import SETTLE_S
from workers.prices import ListPrice, PriceBook, RelayPrice, load_prices

LONG_AGO = datetime(2026, 5, 1, 23, 59, 0, tzinfo=UTC)
ROUTES = ("relay-a/KEY_A …1a2b", "relay-b/KEY_B …9z9z", None)


def _job(store: Store, name: str, tag: str, lines: int) -> int:
    with store.session() as s:
        job = q.create_job(s, name=name, source_path="/t", source_sha256=name, options=JobOptions(tag=tag))
        assert job.id is not None
        rows = [
            {"job_id": job.id, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": "/v1/chat/completions",
             "model": "gpt-4o-mini" if i % 3 else "gpt-4o", "body": "{}", "est_tokens": 40, "state": "pending",
             "attempts": 0, "claims": 0, "usage_estimated": False}
            for i in range(lines)
        ]  # fmt: skip
        q.insert_requests(s, rows)
        job.total = lines
        q.start_job(s, job.id)
        return job.id


def _calls(store: Store, job_id: int, *, at: datetime) -> None:
    """Line i: a 429 first for every 5th, no answer for every 7th, a failure for every 11th; 1 and 2 packed."""
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="o", lease_seconds=600, limit=1000)
    attempts, results = [], []
    for i, it in enumerate(items):
        packed = i in (1, 2)  # one call: one model, one route, one start
        when, route = at + timedelta(minutes=0 if packed else i), ROUTES[0 if packed else i % 3]
        call = f"pack{job_id}" if packed else f"c{job_id}-{i}"
        if i % 5 == 0:
            attempts.append(AttemptRecord(it.request_id, job_id, 1, when, 5, 429, "rate_limited", "rate_limited",
                                          call_id=f"t{job_id}-{i}", provider=route))  # fmt: skip
        if i % 7 == 0:
            attempts.append(AttemptRecord(it.request_id, job_id, 1, when, 5, None, "error", "timeout",
                                          call_id=f"u{job_id}-{i}", provider=route))  # fmt: skip
        failed, usage = i % 11 == 0, Usage(10 + i, 5 + i, 15 + 2 * i)
        attempts.append(AttemptRecord(it.request_id, job_id, 2, when, 50, 400 if failed else 200,
                                      "error" if failed else "ok", "bad_request" if failed else "",
                                      usage=None if failed else usage, call_id=call, provider=route))  # fmt: skip
        results.append(
            LineResult(it.request_id, job_id, "failed", 400, error_code="bad")
            if failed
            else LineResult(it.request_id, job_id, "succeeded", 200, "{}", usage=usage, provider=route)
        )
    with store.session() as s:
        q.record_outcomes(s, attempts, results)


@pytest.fixture
def filled(store: Store) -> Store:
    old, new = _job(store, "old", "nightly", 60), _job(store, "new", "adhoc", 30)
    _calls(store, old, at=LONG_AGO)  # spans two UTC days, folded into the rollup
    _calls(store, new, at=datetime.now(UTC) - timedelta(seconds=SETTLE_S / 10))  # read live
    return store


def _rows(report: Report) -> dict[tuple[str, ...], tuple[object, ...]]:
    return {
        r.key: (r.totals.calls, r.totals.billed_calls, r.totals.billed, r.totals.characters,
                r.totals.cost, r.totals.unknown_calls, r.totals.unknown_cost)
        for r in report.rows
    }  # fmt: skip


@pytest.mark.parametrize("by", ["day", "model", "tag", "provider", "key", "job", "model,provider"])
def test_summed_report_is_the_walked_report(filled: Store, by: str) -> None:
    prices = load_prices([])
    walked = usage_report(filled, None, by=by, prices=prices)
    summed = grouped_report(filled, by=by, prices=prices)
    assert _rows(summed) == _rows(walked)
    assert summed.total.cost == walked.total.cost > 0
    assert summed.total.unknown_calls == walked.total.unknown_calls > 0


def test_calls_are_folded_once_and_the_rest_read_live(filled: Store) -> None:
    prices = load_prices([])
    first = grouped_report(filled, by="day", prices=prices)
    with filled.session() as s:
        mark = q.fold(s)
        folded = s.connection().execute(sa.text("SELECT count(*), sum(calls) FROM usage_rollup")).one()
        groups = q.rollup_groups(s)
    assert mark > 0 and folded[0] == len([g for g in groups if g.day.startswith("2026-05")])
    assert _rows(grouped_report(filled, by="day", prices=prices)) == _rows(
        first
    )  # folding again adds nothing
    assert len(groups) < 20  # groups, not calls: 90 lines made 140 calls


def test_deleting_a_job_drops_its_groups(filled: Store) -> None:
    with filled.session() as s:
        q.fold(s)
        old = q.list_jobs(s)[-1].id
        assert old is not None
        q.set_status(s, old, JobStatus.CANCELLED, allowed=list(JobStatus))
    with filled.session() as s:
        q.delete_jobs(s, [old])
    with filled.session() as s:
        assert all(g.job_id != old for g in q.rollup_groups(s))


def test_a_relay_prices_rounding_is_in_the_unknown_part(filled: Store) -> None:
    """A relay rounds each call up to a whole quota: the sums' cost is under by less than 1 quota a call."""
    mini, big = RelayPrice(Decimal("0.075"), Decimal(4)), RelayPrice(Decimal("1.25"), Decimal(4))
    book = PriceBook(prices={"gpt-4o-mini": mini, "gpt-4o": big})
    walked = usage_report(filled, None, by="model", prices=book)
    summed = grouped_report(filled, by="model", prices=book)
    quota = Decimal(1) / 500_000
    for w, s in zip(walked.rows, summed.rows, strict=True):
        assert s.totals.cost <= w.totals.cost <= s.totals.cost + s.totals.billed_calls * quota
        assert s.totals.cost + s.totals.unknown_cost >= w.totals.cost + w.totals.unknown_cost


def test_endpoint_is_not_a_summed_dimension(filled: Store) -> None:
    with pytest.raises(ConfigError, match="batcher usage --by endpoint"):
        grouped_report(filled, by="endpoint", prices=load_prices([]))


def test_what_it_reads_line_by_line_comes_from_partial_indexes(tmp_path: Path) -> None:
    """The unanswered calls and the cached lines: SQLite plans the report's own statements on them."""
    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().startswith("SELECT"):
            seen.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    grouped_report(store, by="model", prices=load_prices([]))
    sa.event.remove(store.engine, "before_cursor_execute", keep)
    with store.engine.connect() as conn:
        plans = {
            sql: str(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()) for sql, params in seen
        }
    store.close()
    assert any("ix_attempt_unanswered" in plan for sql, plan in plans.items() if "bad_body" in sql)
    assert any("ix_request_cached" in plan for sql, plan in plans.items() if "request.cached" in sql)


def _succeeded_calls(
    store: Store, name: str, usages: list[Usage], quotas: list[int | None] | None = None
) -> int:
    """A job of one succeeded call a line, with these usages (and the relay's final charges)."""
    job = _job(store, name, "v", len(usages))
    with store.session() as s:
        items = q.claim_lines(s, job_id=job, owner="o", lease_seconds=600, limit=10)
    at = LONG_AGO - timedelta(days=1)
    charged = zip(items, usages, quotas or [None] * len(usages), strict=True)
    attempts, results = [], []
    for i, (it, u, quota) in enumerate(charged):
        attempts.append(AttemptRecord(it.request_id, job, 1, at, 5, 200, "ok", "", usage=u, call_id=f"{name}{i}",
                                      relay_quota=quota))  # fmt: skip
        results.append(LineResult(it.request_id, job, "succeeded", 200, "{}", usage=u))
    with store.session() as s:
        q.record_outcomes(s, attempts, results)
    return job


def _both_reports(store: Store, per_call: str, by: str) -> tuple[Report, Report]:
    book = PriceBook(
        prices={m: ListPrice(input=Decimal(1), per_call=Decimal(per_call)) for m in ("gpt-4o", "gpt-4o-mini")}
    )
    return usage_report(store, None, by=by, prices=book), grouped_report(store, by=by, prices=book)


def test_per_call_prices_count_each_calls_charges(store: Store) -> None:
    """A video task stands for seconds × size per-call charges; other calls for one each."""
    _succeeded_calls(
        store, "video", [Usage(calls=Decimal(8)), Usage(calls=Decimal("4.5")), Usage(prompt_tokens=3)]
    )
    walked, summed = _both_reports(store, "0.10", "job")
    assert (
        summed.total.cost == walked.total.cost == Decimal("0.10") * Decimal("13.5") + Decimal(3) / 1_000_000
    )
    assert _rows(summed) == _rows(walked)


def test_a_call_the_relay_said_its_final_charge_of_costs_that(store: Store) -> None:
    """A re-priced task (the relay's quota at success) costs its quota, in both reports; in one
    group with calls priced by the price table, those keep their price."""
    usages = [Usage(calls=Decimal(n)) for n in (10, 10, 5, 5)]
    _succeeded_calls(store, "kling", usages, [175_000, None, 1, 62_500])  # lines 0, 3: gpt-4o; 1, 2: mini
    walked, summed = _both_reports(store, "0.07", "model")
    assert (
        summed.total.cost
        == walked.total.cost
        == Decimal("0.35") + Decimal("0.7") + Decimal("0.125") + Decimal("0.000002")
    )
    assert _rows(summed) == _rows(walked)
