"""Queries of lines: insert, claim with a lease, renew, release, expire, and what the broker should carry.

A line is claimed with a lease; a line whose lease expired can be claimed again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from functools import lru_cache
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from jobs.endpoints import Endpoint
from jobs.errors import JobNotFound
from jobs.models import (
    JobStatus,
    RequestState,
)
from jobs.records import WorkItem
from jobs.store.bulk import fetch_rows, id_in, ids_where, insert_rows, lines_of_job
from jobs.store.common import JOB_TABLE, REQUEST_TABLE

_req = REQUEST_TABLE


def insert_requests(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk-insert lines (dicts of Request columns, the same keys in each order; the columns they
    leave out take the model's defaults) with the backend's fastest insert (``insert_rows``)."""
    if rows:
        insert_request_values(session, tuple(rows[0]), [tuple(row.values()) for row in rows])


def insert_request_values(session: Session, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``insert_requests`` of rows given as tuples of ``columns`` values (ingest's million lines)."""
    if rows:
        defaults = _defaults_without(tuple(columns))
        insert_rows(session.connection(), "request", list(columns), rows, shared=defaults)


@lru_cache(maxsize=8)
def _defaults_without(columns: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in _DEFAULTS.items() if k not in columns}


# The models' scalar defaults (state "pending", no attempts...), which a driver insert must spell out.
_DEFAULTS = {
    c.name: c.default.arg.value if isinstance(c.default.arg, Enum) else c.default.arg
    for c in _req.columns
    if c.default is not None and c.default.is_scalar and c.default.arg is not None
}


def claim_lines(
    session: Session,
    *,
    job_id: int,
    owner: str,
    lease_seconds: float,
    limit: int | None = None,
    request_ids: Sequence[int] | None = None,
    now: float | None = None,
) -> list[WorkItem]:
    """Lease claimable lines of a running job: the next ``limit`` in line order, or those ids.

    A line is claimable when pending, or running under an expired lease. A line already terminal
    or leased by a live executor is skipped, so a redelivered message claims nothing twice.
    Pending lines come first, in line order, straight from the (job, state, line) index; lines
    whose lease expired are taken when the pending ones do not fill the claim, so a claim costs
    what it returns, never the lines already done.
    """
    now = time.time() if now is None else now
    session.flush()  # a status set in this session counts
    conn = session.connection()
    if _job_status(conn, job_id) != JobStatus.RUNNING:
        return []
    if request_ids is not None:
        ids = lines_of_job(conn, job_id, request_ids)  # ``_lease`` takes those still claimable
    elif limit is not None:
        leased = _lease_next(session, job_id, limit, owner=owner, until=now + lease_seconds, now=now)
        if len(leased) < limit:
            ids = _expired(conn, job_id, now, limit - len(leased))
            leased += _lease(session, ids, owner=owner, until=now + lease_seconds, now=now)
        return sorted(leased, key=lambda item: item.request_id)
    else:
        ids = _pending(conn, job_id, limit) + _expired(conn, job_id, now, None)
    return _lease(session, ids, owner=owner, until=now + lease_seconds, now=now)


def _job_status(conn: sa.Connection, job_id: int) -> str:
    status = conn.execute(sa.select(JOB_TABLE.c.status).where(JOB_TABLE.c.id == job_id)).scalar()
    if status is None:
        raise JobNotFound(job_id)
    return str(status)


def _pending(conn: sa.Connection, job_id: int, limit: int | None) -> list[int]:
    query = (
        sa.select(_req.c.id)
        .where(_req.c.job_id == job_id, _req.c.state == RequestState.PENDING.value)
        .order_by(_req.c.line_no)
        .limit(limit)
    )
    return [row[0] for row in conn.execute(query)]


def _expired(conn: sa.Connection, job_id: int, now: float, limit: int | None) -> list[int]:
    query = (
        sa.select(_req.c.id)
        .where(
            _req.c.job_id == job_id,
            _req.c.state == RequestState.RUNNING.value,
            _req.c.lease_expires_at < now,
        )
        .order_by(_req.c.line_no)
        .limit(limit)
    )
    return [row[0] for row in conn.execute(query)]


def _lease(session: Session, ids: list[int], *, owner: str, until: float, now: float) -> list[WorkItem]:
    """Lease those of ``ids`` still claimable; their work items in id order.

    Plain SQL at the driver (``jobs.store.bulk``): SQLAlchemy's expanding ``IN`` of a claim's
    2,048 ids, and its processing of the rows returned, cost more than the update itself.
    """
    if not ids:
        return []
    conn = session.connection()
    where, id_params = ids_where(conn, ids)
    rows = fetch_rows(conn, _LEASE_SQL.format(ids=where), (owner, until, *id_params, _PENDING, _RUNNING, now))
    return sorted((_work_item(row) for row in rows), key=lambda item: item.request_id)


def _lease_next(
    session: Session, job_id: int, limit: int, *, owner: str, until: float, now: float
) -> list[WorkItem]:
    """Lease the job's next ``limit`` pending lines in line order, in one statement.

    The ids are picked inside the UPDATE: read out and bound back, a claim's 2,048 ids cost
    more than the rest of the claim's Python. A line another claim took meanwhile fails the
    UPDATE's own state condition (PostgreSQL checks it again on the row it waited for), as before.
    """
    params = (owner, until, job_id, _PENDING, limit, _PENDING, _RUNNING, now)
    rows = fetch_rows(session.connection(), _LEASE_NEXT_SQL, params)
    return [_work_item(row) for row in rows]


_PENDING, _RUNNING = RequestState.PENDING.value, RequestState.RUNNING.value
_WORK_COLUMNS = ("id", "job_id", "custom_id", "endpoint", "model", "body", "attempts", "est_tokens")
_LEASE_SQL = (
    f"UPDATE request SET state = '{_RUNNING}', lease_owner = ?, lease_expires_at = ?, claims = claims + 1 "
    "WHERE {ids} AND (state = ? OR (state = ? AND lease_expires_at < ?)) "
    f"RETURNING {', '.join(_WORK_COLUMNS)}"
)

_LEASE_NEXT_SQL = _LEASE_SQL.format(
    ids="id IN (SELECT id FROM request WHERE job_id = ? AND state = ? ORDER BY line_no LIMIT ?)"
)


def _work_item(row: Any) -> WorkItem:
    rid, job_id, custom_id, endpoint, model, body, attempts, est_tokens = row
    return WorkItem(rid, job_id, custom_id, _endpoint(endpoint), model, body, attempts, est_tokens)


@lru_cache(maxsize=256)  # a claim's lines name a few routes: one frozen value each, not one a line
def _endpoint(path: str) -> Endpoint:
    return Endpoint(path)


def _update_owned(session: Session, request_ids: Iterable[int], owner: str, values: dict[str, Any]) -> int:
    """Update the lines this owner holds running leases on; return how many."""
    ids = list(request_ids)
    if not ids:
        return 0
    running = _req.c.state == RequestState.RUNNING.value
    conn = session.connection()
    mine = sa.and_(id_in(conn, _req.c.id, ids), _req.c.lease_owner == owner, running)
    return int(conn.execute(sa.update(_req).where(mine).values(values)).rowcount)


def renew_leases(session: Session, request_ids: Iterable[int], *, owner: str, until: float) -> int:
    """Extend the leases this owner holds on lines still running; return how many."""
    return _update_owned(session, request_ids, owner, {"lease_expires_at": until})


def release_lines(session: Session, request_ids: Iterable[int], *, owner: str) -> int:
    """Give back lines this owner leased but will not finish (pause, stop, shutdown).

    The claim is taken back too: the poison-line count (``claims``) is for lines whose owner
    died holding them, and a live owner giving lines back in order says nothing against them.
    Without it, five pauses, or a limiter briefly unreachable after a Redis restart five times
    over, failed lines as ``poison_line`` that never had a call.
    """
    return _update_owned(session, request_ids, owner, _RELEASED | {"claims": _UNCLAIMED})


_UNCLAIMED = sa.case((_req.c.claims > 0, _req.c.claims - 1), else_=0)
_RELEASED = {
    "state": RequestState.PENDING.value,
    "lease_owner": None,
    "lease_expires_at": None,
    "enqueued_at": None,
}


def release_owners(session: Session, job_id: int, owners: Iterable[str]) -> int:
    """Give back every line leased by these owners (executors known to be dead)."""
    dead = list(owners)
    if not dead:
        return 0
    stmt = (
        sa.update(_req)
        .where(
            _req.c.job_id == job_id,
            _req.c.state == RequestState.RUNNING.value,
            _req.c.lease_owner.in_(dead),
        )
        .values(_RELEASED)
    )
    return session.connection().execute(stmt).rowcount


def lease_owners(session: Session, job_id: int) -> list[str]:
    """The owners holding leases on running lines of the job."""
    query = (
        sa.select(_req.c.lease_owner)
        .where(_req.c.job_id == job_id, _req.c.state == RequestState.RUNNING.value)
        .distinct()
    )
    return [row[0] for row in session.connection().execute(query) if row[0]]


def expire_leases(session: Session, job_id: int, *, now: float) -> int:
    """Lines whose lease ran out go back to pending, to be enqueued again."""
    stmt = (
        sa.update(_req)
        .where(
            _req.c.job_id == job_id,
            _req.c.state == RequestState.RUNNING.value,
            _req.c.lease_expires_at < now,
        )
        .values(state=RequestState.PENDING.value, lease_owner=None, lease_expires_at=None, enqueued_at=None)
    )
    return int(session.connection().execute(stmt).rowcount)


class Unqueued(NamedTuple):
    """A pending line with no live message: its id, endpoint and line number (the page's key)."""

    id: int
    endpoint: str
    line_no: int


def unqueued_lines(
    session: Session,
    job_id: int,
    *,
    lost_before: float | None,
    after_line: int | None = None,
    limit: int = 5000,
) -> list[Unqueued]:
    """Pending lines with no live message: never enqueued, or enqueued before the broker lost it.

    In line order, after ``after_line`` (from the first if None): a keyset page along the index
    on (job, state, line), so each page reads only its own lines. Ordered by id, PostgreSQL read
    every pending line of a freshly ingested job and sorted them, for each page: 1.1 s a page of
    4,096 at a million lines. The key relies on line numbers being unique in a job: ingest, the
    only writer of lines, numbers them by their place in the job's one file.
    """
    lost = _req.c.enqueued_at.is_(None)
    if lost_before is not None:
        lost = sa.or_(lost, _req.c.enqueued_at < lost_before)
    where = [_req.c.job_id == job_id, _req.c.state == RequestState.PENDING.value, lost]
    if after_line is not None:
        where.append(_req.c.line_no > after_line)
    query = (
        sa.select(_req.c.id, _req.c.endpoint, _req.c.line_no)
        .where(*where)
        .order_by(_req.c.job_id, _req.c.state, _req.c.line_no)
        .limit(limit)
    )
    return [Unqueued(*row) for row in session.connection().execute(query)]


def mark_enqueued(session: Session, request_ids: Sequence[int], *, now: float) -> None:
    """Stamp lines as carried by a broker message sent at ``now``."""
    if request_ids:
        conn = session.connection()
        conn.execute(sa.update(_req).where(id_in(conn, _req.c.id, request_ids)).values(enqueued_at=now))
