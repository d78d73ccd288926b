"""Statements at the driver (``jobs.store.bulk``): by line ids on PostgreSQL one text for any number
of ids; ingest's chunk of lines one SQLite statement."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg._queries import MAX_CACHED_STATEMENT_PARAMS

from jobs import store as q
from jobs.db import Store
from jobs.models import Request
from tests.helpers import all_lines
from tests.test_store import make_job


@contextmanager
def statements(store: Store) -> Iterator[list[tuple[str, int]]]:
    """Each statement sent to the driver in the block, with its number of parameters (of a row)."""
    seen: list[tuple[str, int]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, len(params[0] if many else params)))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def by_ids(store: Store, job_id: int, ids: list[int]) -> None:
    """What a chunk does by its message's ids: poison check, claim, renew, stamp, give back."""
    with store.session() as s:
        q.fail_overclaimed(s, job_id, max_claims=3, request_ids=ids)
        assert len(q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, request_ids=ids)) == len(ids)
        assert q.renew_leases(s, ids, owner="a", until=time.time() + 60) == len(ids)
        q.mark_enqueued(s, ids, now=time.time())
        assert q.release_lines(s, ids, owner="a") == len(ids)


@pytest.mark.postgres
def test_by_id_statements_have_one_text_and_few_parameters_for_any_number_of_ids(pg_url: str) -> None:
    """psycopg rewrites a statement's placeholders in Python and keeps the rewrite only for
    statements of at most 50 parameters: a claim's ids go as one array parameter."""
    store = Store(pg_url)
    try:
        job_id = make_job(store, n=400)
        ids = [line.id for line in all_lines(store) if line.id is not None]
        with statements(store) as few:
            by_ids(store, job_id, ids[:60])
        with statements(store) as many:
            by_ids(store, job_id, ids[100:])
    finally:
        store.close()
    assert [sql for sql, _ in few] == [sql for sql, _ in many]
    assert max(n for _, n in many) <= MAX_CACHED_STATEMENT_PARAMS
    assert any("ANY(CAST(%b AS BIGINT[]))" in sql for sql, _ in many)  # binary: see ``bulk.ARRAY_PARAM``


def test_by_id_statements_take_only_the_lines_of_their_ids(store: Store) -> None:
    job_id = make_job(store, n=10)
    ids = [line.id for line in all_lines(store) if line.id is not None]
    by_ids(store, job_id, ids[2:5])
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=60, request_ids=[ids[3], ids[7]])
    assert [i.request_id for i in items] == [ids[3], ids[7]]
    lines = all_lines(store)
    assert [(x.state, x.claims) for x in lines[2:5]] == [("pending", 0), ("running", 1), ("pending", 0)]
    assert {x.enqueued_at is not None for x in lines[2:5]} == {False}  # released lines lose their stamp


def test_a_chunk_of_ingest_lines_is_one_sqlite_statement(tmp_path: Path) -> None:
    """2,000 lines of 8 columns: one INSERT where SQLite allows 16,000 parameters (999 a statement
    made 17 of them, each a turn of the GIL for ingest's writer thread)."""
    columns = ("job_id", "custom_id", "line_no", "endpoint", "model", "price_key", "body", "est_tokens")
    inserts: list[str] = []
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, store.session() as s:
        job = q.create_job(s, name="t", source_path="/t.jsonl", source_sha256="abc")
        values = [(job.id, f"c{i}", i, "/v1/embeddings", "m", None, "{}", 1) for i in range(2000)]
        driver = s.connection().connection.driver_connection
        assert driver is not None
        driver.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)
        q.insert_request_values(s, columns, values)
        driver.set_trace_callback(None)
        assert s.exec(sa.select(sa.func.count()).select_from(Request)).scalar_one() == 2000  # type: ignore[call-overload]
    assert len(inserts) == 1
