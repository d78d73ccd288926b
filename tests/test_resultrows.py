"""Result rows written one statement per call's lines (``jobs.store.resultrows``), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from psycopg._queries import MAX_CACHED_STATEMENT_PARAMS

from jobs import store as q
from jobs.db import Store
from jobs.models import RequestState
from jobs.records import AttemptRecord, LineResult, Usage
from jobs.store import resultrows
from jobs.vectors import Vectors
from tests.helpers import all_lines
from tests.test_store import make_job, ok
from tests.test_store_bulk import statements


def _pack(ids: list[int], job_id: int) -> tuple[AttemptRecord, list[LineResult]]:
    """One answered packed call: one attempt row, each line its own body, usage and vector."""
    block = Vectors(bytes(range(4 * 2)) * len(ids), 2)
    call = AttemptRecord(
        request_id=ids[0],
        job_id=job_id,
        attempt_no=2,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=5,
        status_code=200,
        outcome="ok",
        error_class="ok",
        carried=tuple((rid, 2) for rid in ids),
    )
    results = [
        LineResult(
            request_id=rid,
            job_id=job_id,
            state=RequestState.SUCCEEDED,
            status_code=200,
            response_body=f'{{"n":{n}}}',
            upstream_request_id="req_9",
            usage=Usage(n, 0, n + 1),
            latency_ms=40,
            vectors=block.part(n, n + 1),
            provider="relay/abcd",
        )
        for n, rid in enumerate(ids)
    ]
    return call, results


def _claim(store: Store, job_id: int) -> list[int]:
    with store.session() as s:
        return [i.request_id for i in q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)]


def test_a_pack_writes_each_line_its_own_columns_and_skips_terminal_lines(store: Store) -> None:
    job_id = make_job(store, n=12)
    ids = _claim(store, job_id)
    with store.session() as s:
        q.record_results(s, [ok(ids[3], job_id, tokens=99)])  # terminal before the pack lands
    call, results = _pack(ids, job_id)
    with store.session() as s:
        assert q.record_outcomes(s, [call], results) == 11
    lines = all_lines(store)
    with store.session() as s:
        job = q.get_job(s, job_id)
    assert job.succeeded == 12
    assert lines[3].total_tokens == 99 and lines[3].response_body == '{"ok":true}'
    for n, line in enumerate(lines):
        if n == 3:
            continue
        assert (line.response_body, line.prompt_tokens, line.total_tokens) == (f'{{"n":{n}}}', n, n + 1)
        assert (line.vector_start, line.vector_count, line.attempts) == (n, 1, 2)
        assert (line.state, line.upstream_request_id, line.latency_ms, line.provider) == (
            "succeeded",
            "req_9",
            40,
            "relay/abcd",
        )


def test_a_group_of_failures_with_no_body_usage_or_vectors_is_written(store: Store) -> None:
    """Every line's own column NULL: PostgreSQL types such a VALUES column as text."""
    job_id = make_job(store, n=resultrows.GROUP_MIN)
    ids = _claim(store, job_id)
    failed = [
        LineResult(
            request_id=rid, job_id=job_id, state=RequestState.FAILED, error_code="bad", error_message="no"
        )
        for rid in ids
    ]
    with store.session() as s:
        assert q.record_results(s, failed) == len(ids)
    lines = all_lines(store)
    assert {
        (x.state, x.error_code, x.last_error, x.response_body, x.prompt_tokens, x.vector_start) for x in lines
    } == {("failed", "bad", "no", None, None, None)}


def test_groups_larger_than_a_statement_and_lines_alone_land_in_one_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resultrows, "ROWS_A_STATEMENT", 5)
    job_id = make_job(store, n=14)
    ids = _claim(store, job_id)
    call, results = _pack(ids[:12], job_id)
    alone = [ok(ids[12], job_id, tokens=7), ok(ids[13], job_id, tokens=8)]
    with store.session() as s:
        assert q.record_outcomes(s, [call], [*results, *alone]) == 14
    lines = all_lines(store)
    assert [x.total_tokens for x in lines] == [*range(1, 13), 7, 8]
    assert [x.attempts for x in lines] == [2] * 12 + [0, 0]
    assert all(x.lease_owner is None for x in lines)


@pytest.mark.postgres
def test_a_groups_statements_on_postgresql_have_one_text_and_few_parameters_for_any_size(pg_url: str) -> None:
    """The lines' own columns go as one array each (see ``jobs.store.bulk.ids_where``): psycopg
    rewrites placeholders in Python and keeps the rewrite only up to 50 parameters."""
    store = Store(pg_url)
    try:
        job_id = make_job(store, n=110)
        ids = _claim(store, job_id)
        sizes = []
        for part in (ids[:10], ids[10:]):
            call, results = _pack(part, job_id)
            with statements(store) as seen, store.session() as s:
                assert q.record_outcomes(s, [call], results) == len(part)
            sizes.append(seen)
        lines = all_lines(store)
    finally:
        store.close()
    few, many = sizes
    assert [sql for sql, _ in few] == [sql for sql, _ in many]
    assert max(n for _, n in many) <= MAX_CACHED_STATEMENT_PARAMS
    assert [(x.prompt_tokens, x.vector_start, x.attempts) for x in lines[10:13]] == [
        (0, 0, 2),
        (1, 1, 2),
        (2, 2, 2),
    ]


def test_a_groups_bodies_land_as_sent_whatever_they_hold(store: Store) -> None:
    """Quotes, backslashes, braces, commas, NULL-looking text and non-ASCII: PostgreSQL gets them
    as a binary array, which quotes nothing."""
    job_id = make_job(store, n=resultrows.GROUP_MIN)
    ids = _claim(store, job_id)
    call, results = _pack(ids, job_id)
    odd = ['{"a":"x\\\\"}', "NULL", '{"b":[1,2]}', "", 'a,"b"', "负载 ✓", "\\", "{}"]
    for r, body in zip(results, odd, strict=True):
        r.response_body = body
    with store.session() as s:
        q.record_outcomes(s, [call], results)
    assert [x.response_body for x in all_lines(store)] == odd
