"""jobs.store.dashboard: aggregates and pages, whose rows are counted in buckets, never in lines.

Speed is a benchmark's business; these tests check that every statement the dashboard's pages
run returns a number of rows bounded by what a page shows (jobs on a page, seconds of a chart,
models, failed lines shown), with a job of 10,000 lines and 1,000 jobs in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from batcher.dashboard.board import Board
from jobs import store as q
from jobs.db import Store
from jobs.models import Attempt, JobStatus
from jobs.records import AttemptRecord, LineResult, Usage
from jobs.settings import load_settings
from jobs.store.common import JOB_TABLE

START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
LINES = 10_000
SECONDS = 40  # the big job's calls are spread over this many seconds


def _job(store: Store, n: int, *, name: str = "j", tag: str | None = None) -> int:
    from jobs.options import JobOptions

    with store.session() as s:
        job = q.create_job(s, name=name, source_path="/t", source_sha256=name, options=JobOptions(tag=tag))
        assert job.id is not None
        rows = [
            {"job_id": job.id, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": "/v1/chat/completions",
             "model": "gpt-4o-mini" if i % 2 else "gpt-4o", "body": "{}", "est_tokens": 1, "state": "pending",
             "attempts": 0, "claims": 0, "usage_estimated": False}
            for i in range(n)
        ]  # fmt: skip
        if rows:
            q.insert_requests(s, rows)
        job.total = n
        q.start_job(s, job.id)
        return job.id


def _run(store: Store, job_id: int, *, fail_every: int = 0, throttle_every: int = 0) -> None:
    """Every line gets an attempt (some a 429 first) and a terminal result, spread over SECONDS."""
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="o", lease_seconds=600, limit=LINES)
    attempts, results = [], []
    for i, it in enumerate(items):
        at = START + timedelta(seconds=i % SECONDS)
        if throttle_every and i % throttle_every == 0:
            attempts.append(
                AttemptRecord(
                    it.request_id, job_id, 1, at, 5, 429, "rate_limited", "rate_limited", call_id=f"t{i}"
                )
            )
        failed = fail_every and i % fail_every == 0
        usage = None if failed else Usage(10, 5, 15)
        attempts.append(
            AttemptRecord(it.request_id, job_id, 1, at, 50, 400 if failed else 200, "error" if failed else "ok",
                          "bad_request" if failed else "", usage=usage, call_id=f"c{i}")
        )  # fmt: skip
        results.append(
            LineResult(it.request_id, job_id, "failed", 400, error_code="bad", error_message=f"bad line {i}")
            if failed
            else LineResult(it.request_id, job_id, "succeeded", 200, '{"ok": true}', usage=usage)
        )
    with store.session() as s:
        q.record_outcomes(s, attempts, results)


@pytest.fixture
def big(store: Store) -> int:
    job_id = _job(store, LINES, name="big", tag="nightly")
    _run(store, job_id, fail_every=100, throttle_every=50)
    return job_id


def test_timeline_sums_calls_per_second(store: Store, big: int) -> None:
    with store.session() as s:
        buckets = q.timeline(s, big)
    assert len(buckets) == SECONDS
    assert sum(b.calls for b in buckets) == LINES + LINES // 50
    assert sum(b.rate_limited for b in buckets) == LINES // 50
    assert sum(b.tokens for b in buckets) == 15 * (LINES - LINES // 100)
    assert buckets[0].start == int(START.timestamp())


def test_timeline_after_an_id_reads_only_newer_attempts(store: Store, big: int) -> None:
    with store.session() as s:
        whole = q.timeline(s, big)
        last = max(b.last_id for b in whole)
        assert q.timeline(s, big, after_id=last) == []
        head = q.timeline(s, big, upto_id=last - 100)
        tail = q.timeline(s, big, after_id=last - 100)
    assert sum(b.calls for b in head) + sum(b.calls for b in tail) == sum(b.calls for b in whole)


def test_last_attempt_before_a_time(store: Store, big: int) -> None:
    with store.session() as s:
        whole = q.timeline(s, big)
        assert q.last_attempt_before(s, big, START) == 0
        assert q.last_attempt_before(s, big, START + timedelta(days=1)) == max(b.last_id for b in whole)
        cut = START + timedelta(seconds=SECONDS // 2)
        half = q.last_attempt_before(s, big, cut)
        attempts = list(s.exec(select(Attempt).where(Attempt.job_id == big)))
    assert half == max(a.id for a in attempts if a.started_at.replace(tzinfo=UTC) < cut)
    assert half < max(a.id for a in attempts)


def test_model_usage_is_the_store_usage_by_model(store: Store, big: int) -> None:
    with store.session() as s:
        mine = {m.model: m for m in q.model_usage(s, big)}
        theirs = {m.model: m for m in q.usage_by_model(s, big)}
    assert mine == theirs


def test_failed_lines_is_a_page_in_input_order(store: Store, big: int) -> None:
    with store.session() as s:
        first = q.failed_lines(s, big, limit=5)
        nxt = q.failed_lines(s, big, limit=5, after_line=first[-1].line_no)
    assert [f.line_no for f in first] == [1, 101, 201, 301, 401]
    assert nxt[0].line_no == 501
    assert first[0].message == "bad line 0" and first[0].error_code == "bad"


def test_page_of_jobs_filters_by_status_and_tag(store: Store) -> None:
    ids = [_job(store, 0, name=f"j{i}", tag="a_b" if i % 2 else "a%b") for i in range(6)]
    with store.session() as s:
        q.set_status(s, ids[0], JobStatus.PAUSED, allowed=[JobStatus.RUNNING])
        s.flush()
        assert q.page_of_jobs(s, tag="a_b").job_ids == [ids[5], ids[3], ids[1]]
        assert q.page_of_jobs(s, tag="a%b", limit=2) == q.JobPage([ids[4], ids[2]], 3)
        assert q.page_of_jobs(s, tag="a").total == 0
        assert q.page_of_jobs(s, status="running").total == 5
        assert q.page_of_jobs(s, status="paused").job_ids == [ids[0]]


class _Rows:
    """Every SELECT run on the engine, run again to count the rows it returns."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.statements: list[tuple[str, Any]] = []

    def __call__(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not many:
            self.statements.append((statement, parameters))

    def counts(self) -> Iterator[tuple[int, str]]:
        raw = self.store.engine.raw_connection()
        try:
            for statement, parameters in self.statements:
                cursor = raw.cursor()
                cursor.execute(statement, parameters)
                yield len(cursor.fetchall()), statement
        finally:
            raw.close()


def test_pages_over_a_big_job_and_1000_jobs_read_rows_by_the_page(store: Store, big: int) -> None:
    with store.session() as s:
        s.connection().execute(
            sa.insert(JOB_TABLE),
            [{"name": f"small{i}", "source_path": "/t", "source_sha256": "x", "status": "completed",
              "mode": "embedded", "priority": 5, "total": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
              "options": "{}", "created_at": START} for i in range(1000)],
        )  # fmt: skip
    board = Board(store, load_settings())
    rows = _Rows(store)
    sa.event.listen(store.engine, "before_cursor_execute", rows)
    try:
        page, total = board.jobs(limit=100)
        view = board.job(big, failures=50)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", rows)
    assert total == 1001 and len(page) == 100
    assert sum(view.series.requests) == LINES + LINES // 50
    assert len(view.failures) == 50
    biggest, statement = max(rows.counts())
    assert biggest <= 100, statement  # a page of jobs, 40 seconds of chart, 2 models, 50 failed lines
    assert len(rows.statements) < 600  # a handful per job shown, whatever the lines
