"""Writing attempts and results (usage is read back by ``jobs.store.usage``).

A result is written only while the line is not terminal, so a line that already succeeded is never
overwritten or counted twice (the write is idempotent, whoever redelivers it); the job's counters
move in the same transaction as the lines they count, and so do the answers kept for the
response cache (``jobs.store.cache``). The writes of a flush go to the driver as plain SQL
(``jobs.store.bulk``), the results one statement per call's lines (``jobs.store.resultrows``):
they are the per-line cost of a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.models import (
    utcnow,
)
from jobs.records import AttemptRecord, LineResult
from jobs.store.bulk import db_time, executemany, fetch_rows, ids_where, insert_sql
from jobs.store.cache import save_answers
from jobs.store.common import ATTEMPT_TABLE, NOT_TERMINAL, REQUEST_TABLE, VECTOR_BLOCK_TABLE, bump_counter
from jobs.store.resultrows import USAGE_COLUMNS, usage_values, write_results

_req = REQUEST_TABLE
_att = ATTEMPT_TABLE


@dataclass(frozen=True, slots=True)
class RecentCalls:
    """A job's recent calls and its throttled ones, for the pace ``status`` shows."""

    calls: int
    tokens: int
    rate_limited: int
    overloaded: int


def record_attempts(session: Session, attempts: Sequence[AttemptRecord]) -> None:
    """Insert one Attempt row per upstream call and raise the attempt count of each line it carried."""
    record_outcomes(session, attempts, [])


def record_results(session: Session, results: Sequence[LineResult]) -> int:
    """Write terminal results of lines not yet terminal; count them on their jobs (see below)."""
    return record_outcomes(session, [], results)


def record_outcomes(
    session: Session, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]
) -> int:
    """Record a flush of attempts and terminal results; return how many lines moved.

    A result for a line that is already terminal (a duplicate call after a lease expired, a
    redelivered message) changes nothing. The lines that will move are read first under a row
    lock (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serializes writers),
    so the counters stay exact when two workers race on one line; then they are written with
    their attempt counts (``write_results``), and one executemany raises the counts of the lines
    still going.
    """
    conn = session.connection()
    executemany(conn, _ATTEMPT_INSERT, [_attempt_row(conn, a) for a in attempts])
    latest: dict[int, int] = {}
    for a in attempts:
        for rid, n in a.lines:  # a packed call's row raises each line it carried
            latest[rid] = max(n, latest.get(rid, 0))
    chosen = _moving(conn, results)
    if chosen:
        finished = db_time(conn, utcnow())
        blocks = _insert_blocks(conn, chosen.values())
        write_results(conn, chosen.values(), blocks=blocks, finished=finished, attempts=latest)
        save_answers(conn, chosen.values())
        _count(session, chosen.values())
    going = [(n, rid, n) for rid, n in latest.items() if rid not in chosen]
    executemany(conn, _ATTEMPTS_UPDATE, going)
    return len(chosen)


def _moving(conn: sa.Connection, results: Sequence[LineResult]) -> dict[int, LineResult]:
    """The results that will move their line: not yet terminal, the first result of a line wins."""
    if not results:
        return {}
    moving = _not_terminal(conn, [r.request_id for r in results])
    chosen: dict[int, LineResult] = {}
    for result in results:
        if result.request_id in moving:
            chosen.setdefault(result.request_id, result)
    return chosen


def _count(session: Session, moved_results: Iterable[LineResult]) -> None:
    moved: dict[tuple[int, str], int] = {}
    for result in moved_results:
        key = (result.job_id, result.state)
        moved[key] = moved.get(key, 0) + 1
    for (job_id, state), n in moved.items():
        bump_counter(session, job_id, state, n)


_BLOCK_INSERT = sa.insert(VECTOR_BLOCK_TABLE).returning(VECTOR_BLOCK_TABLE.c.id, sort_by_parameter_order=True)


def _insert_blocks(conn: sa.Connection, moving: Iterable[LineResult]) -> dict[int, int]:
    """Store each call's vector block once; return block ids by ``id()`` of the block's bytes.

    One statement for the whole flush (SQLAlchemy's insertmanyvalues, ids in parameter order):
    unpacked lines each bring a block, and a statement each was a fifth of their run's CPU.
    """
    blocks: dict[int, dict[str, object]] = {}
    for r in moving:
        v = r.vectors
        if v is not None and id(v.data) not in blocks:
            blocks[id(v.data)] = {"dim": v.dim, "encoding": v.encoding.value, "data": v.data}
    if not blocks:
        return {}
    ids = conn.execute(_BLOCK_INSERT, list(blocks.values())).scalars().all()
    return {key: int(block_id) for key, block_id in zip(blocks, ids, strict=True)}


def _not_terminal(conn: sa.Connection, ids: list[int]) -> set[int]:
    """Which of these lines are not terminal yet, locked on PostgreSQL (plain SQL at the driver:
    SQLAlchemy's expanding IN of a pack's 256 ids cost more than the query)."""
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    found: set[int] = set()
    for start in range(0, len(ids), _IDS_A_QUERY):
        part = ids[start : start + _IDS_A_QUERY]
        where, params = ids_where(conn, part)
        sql = _NOT_TERMINAL_SQL.format(ids=where) + lock
        found.update(row[0] for row in fetch_rows(conn, sql, (*params, *NOT_TERMINAL)))
    return found


_IDS_A_QUERY = 2000  # well under every backend's limit of bound parameters (a replay may bring more)
_NOT_TERMINAL_SQL = (
    f"SELECT id FROM request WHERE {{ids}} AND state IN ({', '.join('?' * len(NOT_TERMINAL))})"
)


_ATTEMPT_COLUMNS = (
    "request_id",
    "job_id",
    "attempt_no",
    "started_at",
    "duration_ms",
    "status_code",
    "outcome",
    "error_class",
    "error_message",
    "sent",
    "upstream_request_id",
    "call_id",
    "worker",
    "provider",
    "price_key",
    "lines",
    "relay_quota",
    *USAGE_COLUMNS,
)
_ATTEMPT_INSERT = insert_sql("attempt", _ATTEMPT_COLUMNS)
_ATTEMPTS_UPDATE = "UPDATE request SET attempts = ? WHERE id = ? AND attempts < ?"


def _attempt_row(conn: sa.Connection, a: AttemptRecord) -> tuple[Any, ...]:
    return (
        a.request_id,
        a.job_id,
        a.attempt_no,
        db_time(conn, a.started_at),
        a.duration_ms,
        a.status_code,
        a.outcome,
        a.error_class,
        a.error_message,
        a.sent,
        a.upstream_request_id,
        a.call_id,
        a.worker,
        a.provider,
        a.price_key,
        len(a.carried) or None,
        a.relay_quota,
        *usage_values(a.usage),
    )


def job_models(session: Session, job_id: int) -> list[str]:
    """The models a job's lines name."""
    query = sa.select(_req.c.model).where(_req.c.job_id == job_id).distinct()
    return sorted(str(row[0]) for row in session.connection().execute(query))


def recent_calls(session: Session, job_id: int, *, since: datetime) -> RecentCalls:
    """The job's calls started since ``since`` (with their tokens) and its throttled calls so far."""
    recent = _att.c.started_at >= since
    query = sa.select(
        sa.func.count().filter(recent),
        sa.func.coalesce(sa.func.sum(_att.c.total_tokens).filter(recent), 0),
        sa.func.count().filter(_att.c.error_class == "rate_limited"),
        sa.func.count().filter(_att.c.error_class == "overloaded"),
    ).where(_att.c.job_id == job_id)
    calls, tokens, limited, overloaded = session.connection().execute(query).one()
    return RecentCalls(int(calls), int(tokens), int(limited), int(overloaded))
