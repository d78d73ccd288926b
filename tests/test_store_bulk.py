"""Statements at the driver (``jobs.store.bulk``): by line ids on PostgreSQL one text for any number
of ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg._queries import MAX_CACHED_STATEMENT_PARAMS

from jobs import store as q
from jobs.db import Store
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
