"""What the web dashboard reads: pages of jobs, lines running per job, a job's calls over time, its
failed lines and one line's raw answer.

Every query here is an aggregate or a bounded page, answered from an index: the rows that come
back are counted in jobs shown, time buckets or lines on a page, never in the lines of a job. The
timeline is incremental: it reads only the attempts after the last id it saw (``job_id = ? AND
id > ?`` is a range of the attempt's ``job_id`` index on SQLite, whose entries end with the row id),
so a page polled every second over a 10-million-line job does not walk the job again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.models import RequestState
from jobs.store.common import ATTEMPT_TABLE, JOB_TABLE, REQUEST_TABLE
from jobs.store.usage import USAGE_COLUMNS, ModelUsage, summed_usage

_req = REQUEST_TABLE
_att = ATTEMPT_TABLE
_job = JOB_TABLE


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of jobs (newest first) and how many jobs match the filters in all."""

    job_ids: list[int]
    total: int


@dataclass(frozen=True, slots=True)
class TimeBucket:
    """A job's calls that started in one bucket of time (epoch seconds of its start)."""

    start: int
    calls: int  # HTTP calls: the lines of a packed call count once
    rate_limited: int  # calls answered 429
    tokens: int  # tokens of the calls that answered with usage
    last_id: int  # the highest attempt id counted


@dataclass(frozen=True, slots=True)
class FailedRow:
    """A failed line as the job page lists it."""

    line_no: int
    custom_id: str
    error_code: str | None
    status_code: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class LineDetail:
    """One line with its request and its raw answer, as the dashboard shows it."""

    line_no: int
    custom_id: str
    state: str
    endpoint: str
    model: str
    attempts: int
    status_code: int | None
    error_code: str | None
    message: str | None
    body: str
    response_body: str | None


def page_of_jobs(
    session: Session, *, status: str | None = None, tag: str | None = None, limit: int = 100, offset: int = 0
) -> JobPage:
    """The ids of one page of jobs matching ``status`` and ``tag``, newest first, and their count."""
    where = _job_filters(status, tag)
    ids = sa.select(_job.c.id).where(*where).order_by(_job.c.id.desc()).limit(limit).offset(offset)
    count = sa.select(func.count()).select_from(_job).where(*where)
    conn = session.connection()
    return JobPage([int(i) for i in conn.execute(ids).scalars()], int(conn.execute(count).scalar_one()))


def _job_filters(status: str | None, tag: str | None) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if status:
        where.append(_job.c.status == status)
    if tag:
        # Options are stored as json.dumps(..., sort_keys=True): the tag appears exactly so.
        text = '"tag": ' + json.dumps(tag)
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(_job.c.options.like(f"%{escaped}%", escape="\\"))
    return where


def running_lines(session: Session, job_ids: Sequence[int]) -> dict[int, int]:
    """Lines running now, per job of ``job_ids`` (jobs with none are left out)."""
    if not job_ids:
        return {}
    query = (
        sa.select(_req.c.job_id, func.count())
        .where(_req.c.job_id.in_(list(job_ids)), _req.c.state == RequestState.RUNNING.value)
        .group_by(_req.c.job_id)
    )
    return {int(job): int(n) for job, n in session.connection().execute(query)}


def timeline(
    session: Session, job_id: int, *, after_id: int = 0, upto_id: int | None = None, width_s: int = 1
) -> list[TimeBucket]:
    """The job's attempts with ids in (``after_id``, ``upto_id``], summed per ``width_s`` seconds."""
    conn = session.connection()
    bucket = (_epoch(conn, _att.c.started_at) / width_s).label("bucket")
    call = func.coalesce(_att.c.call_id, sa.cast(_att.c.id, sa.String))
    query = (
        sa.select(
            bucket,
            func.count(sa.distinct(call)),
            func.count(sa.distinct(call)).filter(_att.c.status_code == 429),
            func.coalesce(func.sum(_att.c.total_tokens), 0),
            func.max(_att.c.id),
        )
        .where(*_id_range(job_id, after_id, upto_id))
        .group_by(bucket)
        .order_by(bucket)
    )
    return [
        TimeBucket(int(b) * width_s, int(c), int(r), int(t), int(m)) for b, c, r, t, m in conn.execute(query)
    ]


def model_usage(
    session: Session, job_id: int, *, after_id: int = 0, upto_id: int | None = None
) -> list[ModelUsage]:
    """Per model and provider: the calls with ids in (``after_id``, ``upto_id``] that answered with usage."""
    names = USAGE_COLUMNS
    provider = func.coalesce(_att.c.provider, "")
    query = (
        sa.select(
            _req.c.model,
            provider.label("provider"),
            func.count(_att.c.id),
            *(func.coalesce(func.sum(_att.c[n]), 0).label(n) for n in names),
        )
        .select_from(_att.join(_req, _att.c.request_id == _req.c.id))
        .where(
            *_id_range(job_id, after_id, upto_id),
            _att.c.total_tokens.is_not(None) | _att.c.characters.is_not(None),
        )
        .group_by(_req.c.model, provider)
    )
    rows = session.connection().execute(query)
    return [ModelUsage(str(r[0]), int(r[2]), summed_usage(r), provider=str(r[1])) for r in rows]


def last_attempt_before(session: Session, job_id: int, before: datetime) -> int:
    """The highest id of the job's attempts that started before ``before`` (0: none)."""
    query = sa.select(func.coalesce(func.max(_att.c.id), 0)).where(
        _att.c.job_id == job_id, _att.c.started_at < before.astimezone(UTC)
    )
    return int(session.connection().execute(query).scalar_one())


def _id_range(job_id: int, after_id: int, upto_id: int | None) -> list[sa.ColumnElement[bool]]:
    where = [_att.c.job_id == job_id, _att.c.id > after_id]
    if upto_id is not None:
        where.append(_att.c.id <= upto_id)
    return where


def _epoch(conn: sa.Connection, column: Any) -> sa.ColumnElement[int]:
    """Whole epoch seconds of a DateTime column (SQLite keeps UTC text, PostgreSQL a timestamp)."""
    if conn.dialect.name == "sqlite":
        return sa.cast(func.strftime("%s", column), sa.Integer)
    return sa.cast(func.floor(func.extract("epoch", column)), sa.BigInteger)


def failed_lines(session: Session, job_id: int, *, limit: int = 50, after_line: int = -1) -> list[FailedRow]:
    """A page of the job's failed lines in input order, from ``after_line`` on."""
    query = (
        sa.select(_req.c.line_no, _req.c.custom_id, _req.c.error_code, _req.c.status_code, _req.c.last_error)
        .where(
            _req.c.job_id == job_id,
            _req.c.state == RequestState.FAILED.value,
            _req.c.line_no > after_line,
        )
        .order_by(_req.c.line_no)
        .limit(limit)
    )
    return [FailedRow(int(n), str(c), e, s, m) for n, c, e, s, m in session.connection().execute(query)]


def line_detail(session: Session, job_id: int, line_no: int) -> LineDetail | None:
    """One line of the job by its line number, with its raw answer; None if there is none."""
    names = ("line_no", "custom_id", "state", "endpoint", "model", "attempts", "status_code", "error_code")
    query = sa.select(
        *(_req.c[n] for n in names), _req.c.last_error, _req.c.body, _req.c.response_body
    ).where(_req.c.job_id == job_id, _req.c.line_no == line_no)
    row = session.connection().execute(query).first()
    return None if row is None else LineDetail(*row)
