"""Writing attempts and results (usage is read back by ``jobs.store.usage``).

A result is written only while the line is not terminal, so a line that already succeeded is never
overwritten or counted twice (the write is idempotent, whoever redelivers it); the job's counters
move in the same transaction as the lines they count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.models import (
    utcnow,
)
from jobs.records import AttemptRecord, LineResult, Usage
from jobs.store.common import ATTEMPT_TABLE, NOT_TERMINAL, REQUEST_TABLE, bump_counter

_req = REQUEST_TABLE
_att = ATTEMPT_TABLE


def record_attempts(session: Session, attempts: Sequence[AttemptRecord]) -> None:
    """Insert one Attempt row per upstream call and raise each line's attempt count."""
    if not attempts:
        return
    conn = session.connection()
    conn.execute(sa.insert(_att), [_attempt_row(a) for a in attempts])
    stmt = (
        sa.update(_req)
        .where(_req.c.id == sa.bindparam("rid"), _req.c.attempts < sa.bindparam("n"))
        .values(attempts=sa.bindparam("n"))
    )
    conn.execute(stmt, [{"rid": a.request_id, "n": a.attempt_no} for a in attempts])


def _usage_values(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return dict.fromkeys(_USAGE_COLUMNS) | {"usage_estimated": False}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "characters": usage.characters,
        "usage_estimated": usage.estimated,
    }


_USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "characters",
)


def _attempt_row(a: AttemptRecord) -> dict[str, Any]:
    return {
        "request_id": a.request_id,
        "job_id": a.job_id,
        "attempt_no": a.attempt_no,
        "started_at": a.started_at,
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "outcome": a.outcome,
        "error_class": a.error_class,
        "error_message": a.error_message,
        "sent": a.sent,
        "upstream_request_id": a.upstream_request_id,
        "call_id": a.call_id,
        "worker": a.worker,
        **_usage_values(a.usage),
    }


def record_results(session: Session, results: Sequence[LineResult]) -> int:
    """Write terminal results of lines not yet terminal; count them on their jobs.

    Returns how many lines moved. A result for a line that is already terminal (a duplicate call
    after a lease expired, a redelivered message) changes nothing. The lines that will move are
    read first under a row lock (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
    serializes writers), so the counters stay exact when two workers race on one line; then one
    executemany writes them all.
    """
    if not results:
        return 0
    conn = session.connection()
    moving = _not_terminal(conn, [r.request_id for r in results])
    chosen: dict[int, LineResult] = {}
    for result in results:
        if result.request_id in moving:
            chosen.setdefault(result.request_id, result)  # the first result of a line wins
    if not chosen:
        return 0
    params = [{f"v_{k}": v for k, v in _result_values(r).items()} | {"rid": rid} for rid, r in chosen.items()]
    conn.execute(_RESULT_UPDATE, params)
    moved: dict[tuple[int, str], int] = {}
    for result in chosen.values():
        key = (result.job_id, result.state)
        moved[key] = moved.get(key, 0) + 1
    for (job_id, state), n in moved.items():
        bump_counter(session, job_id, state, n)
    return len(chosen)


def _not_terminal(conn: sa.Connection, ids: list[int]) -> set[int]:
    query = sa.select(_req.c.id).where(_req.c.id.in_(ids), _req.c.state.in_(NOT_TERMINAL))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row[0] for row in conn.execute(query)}


def _result_values(r: LineResult) -> dict[str, Any]:
    return {
        "state": r.state,
        "status_code": r.status_code,
        "response_body": r.response_body,
        "audio_path": r.audio_path,
        "audio_bytes": r.audio_bytes,
        "audio_format": r.audio_format,
        "upstream_request_id": r.upstream_request_id,
        **_usage_values(r.usage),
        "latency_ms": r.latency_ms,
        "error_code": r.error_code,
        "last_error": r.error_message,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": utcnow(),
    }


_RESULT_COLUMNS = (
    "state",
    "status_code",
    "response_body",
    "audio_path",
    "audio_bytes",
    "audio_format",
    "upstream_request_id",
    *_USAGE_COLUMNS,
    "usage_estimated",
    "latency_ms",
    "error_code",
    "last_error",
    "lease_owner",
    "lease_expires_at",
    "finished_at",
)
_RESULT_UPDATE = (
    sa.update(_req)
    # A literal list: executemany cannot expand an IN parameter.
    .where(_req.c.id == sa.bindparam("rid"), sa.text("request.state IN ('pending', 'running')"))
    .values({name: sa.bindparam(f"v_{name}") for name in _RESULT_COLUMNS})
)


def job_models(session: Session, job_id: int) -> list[str]:
    """The models a job's lines name."""
    query = sa.select(_req.c.model).where(_req.c.job_id == job_id).distinct()
    return sorted(str(row[0]) for row in session.connection().execute(query))
