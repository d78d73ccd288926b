"""Failed lines read back grouped by error: what failed, how often, and the first lines of each."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.models import RequestState
from jobs.store.common import REQUEST_TABLE

_req = REQUEST_TABLE
_FAILED = RequestState.FAILED.value


@dataclass(frozen=True)
class FailedLine:
    """One failed line: its custom_id and line number in the input."""

    custom_id: str
    line: int


@dataclass(frozen=True)
class FailureGroup:
    """Failed lines sharing one error code, HTTP status and message."""

    code: str | None
    status_code: int | None
    message: str | None
    count: int
    first: tuple[FailedLine, ...]


def failures_by_code(session: Session, job_id: int) -> dict[str, int]:
    """How many lines failed with each error code, most first."""
    query = (
        sa.select(_req.c.error_code, func.count())
        .where(_req.c.job_id == job_id, _req.c.state == _FAILED)
        .group_by(_req.c.error_code)
        .order_by(func.count().desc(), _req.c.error_code)
    )
    return {str(code or "unknown"): int(n) for code, n in session.connection().execute(query)}


def failure_groups(session: Session, job_id: int, *, limit: int, sample: int = 5) -> list[FailureGroup]:
    """The ``limit`` largest groups of failed lines, each with its first ``sample`` lines."""
    key = (_req.c.error_code, _req.c.status_code, _req.c.last_error)
    query = (
        sa.select(*key, func.count(), func.min(_req.c.line_no))
        .where(_req.c.job_id == job_id, _req.c.state == _FAILED)
        .group_by(*key)
        .order_by(func.count().desc(), func.min(_req.c.line_no))
        .limit(limit)
    )
    rows = session.connection().execute(query).all()
    return [
        FailureGroup(code, status, message, int(n), _first(session, job_id, (code, status, message), sample))
        for code, status, message, n, _ in rows
    ]


def _same(column: sa.ColumnElement[object], value: object) -> sa.ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _first(
    session: Session, job_id: int, key: tuple[str | None, int | None, str | None], n: int
) -> tuple[FailedLine, ...]:
    code, status, message = key
    query = (
        sa.select(_req.c.custom_id, _req.c.line_no)
        .where(
            _req.c.job_id == job_id,
            _req.c.state == _FAILED,
            _same(_req.c.error_code, code),
            _same(_req.c.status_code, status),
            _same(_req.c.last_error, message),
        )
        .order_by(_req.c.line_no)
        .limit(n)
    )
    return tuple(FailedLine(str(c), int(line)) for c, line in session.connection().execute(query))
