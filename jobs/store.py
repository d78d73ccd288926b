"""Queries of the SQL store: jobs, lines, leases, results and counts.

Every function takes ``session`` and returns plain models or records; transactions belong to the
caller (``Store.session()``). The rules that make execution safe live here:

- a line is claimed with a lease; a line whose lease expired can be claimed again;
- a result is written only while the line is not terminal, so a line that already succeeded is
  never overwritten or counted twice (the write is idempotent, whoever redelivers it);
- the job's counters move in the same transaction as the lines they count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from jobs.errors import JobNotFound, JobStateError
from jobs.models import (
    ACTIVE_JOB_STATUSES,
    Attempt,
    Job,
    JobStatus,
    Request,
    RequestState,
    utcnow,
)
from jobs.records import AttemptRecord, LineResult, Usage, WorkItem

_req = Request.__table__  # type: ignore[attr-defined]
_att = Attempt.__table__  # type: ignore[attr-defined]
_NOT_TERMINAL = [RequestState.PENDING.value, RequestState.RUNNING.value]


# --- jobs -----------------------------------------------------------------------------------------


def create_job(session: Session, *, name: str, source_path: str, source_sha256: str, options: str) -> Job:
    """Insert a new queued job and return it with its id."""
    job = Job(name=name, source_path=source_path, source_sha256=source_sha256, options=options)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job:
    """The job with this id, or ``JobNotFound``."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def find_job_by_source(session: Session, sha256: str) -> Job | None:
    """The newest job made from a file with this content, if any."""
    query = select(Job).where(Job.source_sha256 == sha256).order_by(col(Job.id).desc()).limit(1)
    return session.exec(query).first()


def list_jobs(session: Session, *, limit: int = 50) -> list[Job]:
    """The newest jobs first."""
    return list(session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit)))


def set_job_status(session: Session, job: Job, status: JobStatus, *, error: str | None = None) -> None:
    """Move a job to a status, stamping start and finish times."""
    job.status = status
    if status == JobStatus.RUNNING and job.started_at is None:
        job.started_at = utcnow()
    if status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        job.finished_at = utcnow()
    if error is not None or status == JobStatus.RUNNING:
        job.last_error = error
    session.add(job)


def start_job(session: Session, job_id: int) -> Job:
    """Mark a job running so executors may claim its lines; refuse cancelled jobs."""
    job = get_job(session, job_id)
    if job.status == JobStatus.CANCELLED:
        raise JobStateError(f"job {job_id} was cancelled; submit the file again with --new to rerun it")
    if job.status != JobStatus.COMPLETED:
        set_job_status(session, job, JobStatus.RUNNING)
    return job


def update_options(session: Session, job_id: int, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the job's stored options (a new budget, say); return them all."""
    job = get_job(session, job_id)
    options: dict[str, Any] = json.loads(job.options or "{}") | dict(updates)
    job.options = json.dumps(options, sort_keys=True)
    session.add(job)
    return options


def state_counts(session: Session, job_id: int) -> dict[str, int]:
    """How many lines of the job are in each state (every state present, zero or not)."""
    query = select(Request.state, func.count()).where(Request.job_id == job_id).group_by(Request.state)
    counts = {state.value: 0 for state in RequestState}
    counts.update({state: n for state, n in session.exec(query)})
    return counts


def complete_if_done(session: Session, job_id: int) -> bool:
    """Mark the job completed when every line is terminal; return whether it is."""
    job = get_job(session, job_id)
    if job.succeeded + job.failed + job.cancelled < job.total:
        return False
    if job.status in ACTIVE_JOB_STATUSES:
        set_job_status(session, job, JobStatus.COMPLETED)
    return True


# --- lines ----------------------------------------------------------------------------------------


def insert_requests(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk-insert lines (dicts of Request columns) with one executemany."""
    if rows:
        session.connection().execute(sa.insert(_req), list(rows))


def _claimable(now: float) -> sa.ColumnElement[bool]:
    expired = sa.and_(_req.c.state == RequestState.RUNNING.value, _req.c.lease_expires_at < now)
    return sa.or_(_req.c.state == RequestState.PENDING.value, expired)


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
    """
    now = time.time() if now is None else now
    if get_job(session, job_id).status != JobStatus.RUNNING:
        return []
    where = sa.and_(_req.c.job_id == job_id, _claimable(now))
    if request_ids is not None:
        where = sa.and_(where, _req.c.id.in_(list(request_ids)))
    candidates = sa.select(_req.c.id).where(where).order_by(_req.c.line_no).limit(limit)
    ids = [row[0] for row in session.connection().execute(candidates)]
    return _lease(session, ids, owner=owner, until=now + lease_seconds, now=now)


def _lease(session: Session, ids: list[int], *, owner: str, until: float, now: float) -> list[WorkItem]:
    if not ids:
        return []
    stmt = (
        sa.update(_req)
        .where(_req.c.id.in_(ids), _claimable(now))
        .values(
            state=RequestState.RUNNING.value,
            lease_owner=owner,
            lease_expires_at=until,
            claims=_req.c.claims + 1,
        )
        .returning(*(_req.c[name] for name in _WORK_COLUMNS))
    )
    rows = session.connection().execute(stmt)
    items = [WorkItem(*row) for row in rows]
    return sorted(items, key=lambda item: item.request_id)


_WORK_COLUMNS = ("id", "job_id", "custom_id", "endpoint", "model", "body", "attempts", "est_tokens")


def _update_owned(session: Session, request_ids: Iterable[int], owner: str, values: dict[str, Any]) -> int:
    """Update the lines this owner holds running leases on; return how many."""
    ids = list(request_ids)
    if not ids:
        return 0
    mine = sa.and_(
        _req.c.id.in_(ids), _req.c.lease_owner == owner, _req.c.state == RequestState.RUNNING.value
    )
    return int(session.connection().execute(sa.update(_req).where(mine).values(values)).rowcount)


def renew_leases(session: Session, request_ids: Iterable[int], *, owner: str, until: float) -> int:
    """Extend the leases this owner holds on lines still running; return how many."""
    return _update_owned(session, request_ids, owner, {"lease_expires_at": until})


def release_lines(session: Session, request_ids: Iterable[int], *, owner: str) -> int:
    """Give back lines this owner leased but will not finish (pause, stop, shutdown)."""
    return _update_owned(session, request_ids, owner, _RELEASED)


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


# --- results --------------------------------------------------------------------------------------


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
        _bump_counter(session, job_id, state, n)
    return len(chosen)


def _not_terminal(conn: sa.Connection, ids: list[int]) -> set[int]:
    query = sa.select(_req.c.id).where(_req.c.id.in_(ids), _req.c.state.in_(_NOT_TERMINAL))
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


def _bump_counter(session: Session, job_id: int, state: str, n: int) -> None:
    column = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}[state]
    job_table = Job.__table__  # type: ignore[attr-defined]
    stmt = sa.update(job_table).where(job_table.c.id == job_id).values({column: job_table.c[column] + n})
    session.connection().execute(stmt)


# --- operations on whole jobs ---------------------------------------------------------------------


def cancel_job(session: Session, job_id: int) -> int:
    """Cancel a job: pending lines become cancelled; lines in flight may finish. Return the count."""
    job = get_job(session, job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        raise JobStateError(f"job {job_id} is already {job.status}; nothing to cancel")
    stmt = (
        sa.update(_req)
        .where(_req.c.job_id == job_id, _req.c.state == RequestState.PENDING.value)
        .values(state=RequestState.CANCELLED.value, finished_at=utcnow())
    )
    n = session.connection().execute(stmt).rowcount
    session.flush()
    _bump_counter(session, job_id, RequestState.CANCELLED.value, n)
    session.refresh(job)
    set_job_status(session, job, JobStatus.CANCELLED)
    return int(n)


def retry_failed(session: Session, job_id: int) -> int:
    """Put a job's failed lines back to pending with a fresh attempt budget; return the count."""
    job = get_job(session, job_id)
    if job.status == JobStatus.CANCELLED:
        raise JobStateError(f"job {job_id} was cancelled; submit the file again with --new to rerun it")
    stmt = (
        sa.update(_req)
        .where(_req.c.job_id == job_id, _req.c.state == RequestState.FAILED.value)
        .values(state=RequestState.PENDING.value, attempts=0, claims=0, finished_at=None, enqueued_at=None)
    )
    n = int(session.connection().execute(stmt).rowcount)
    if n:
        _bump_counter(session, job_id, RequestState.FAILED.value, -n)
        session.refresh(job)
        job.finished_at = None
        set_job_status(session, job, JobStatus.QUEUED)
    return n


def fail_overclaimed(session: Session, job_id: int, *, max_claims: int) -> int:
    """Fail lines claimed ``max_claims`` times without finishing: they kill their executor."""
    stmt = (
        sa.update(_req)
        .where(
            _req.c.job_id == job_id,
            _req.c.state.in_(_NOT_TERMINAL),
            _req.c.claims >= max_claims,
            sa.or_(_req.c.lease_expires_at.is_(None), _req.c.lease_expires_at < time.time()),
        )
        .values(
            state=RequestState.FAILED.value,
            error_code="poison_line",
            last_error=f"claimed {max_claims} times without finishing (it may crash its worker)",
            lease_owner=None,
            lease_expires_at=None,
            finished_at=utcnow(),
        )
    )
    n = int(session.connection().execute(stmt).rowcount)
    _bump_counter(session, job_id, RequestState.FAILED.value, n)
    return n


def iter_lines(session: Session, job_id: int, *, chunk: int = 1000) -> Iterator[Request]:
    """Every line of the job in input order, fetched in keyset pages: constant memory."""
    last = -1
    while True:
        query = (
            select(Request)
            .where(Request.job_id == job_id, Request.line_no > last)
            .order_by(col(Request.line_no))
            .limit(chunk)
        )
        page = list(session.exec(query))
        if not page:
            return
        yield from page
        session.expunge_all()
        last = page[-1].line_no


def usage_totals(session: Session, job_id: int) -> dict[str, int]:
    """Token totals of the job: of its succeeded lines, and of every upstream call (billed)."""
    lines = (
        session.connection()
        .execute(
            sa.select(
                func.coalesce(func.sum(_req.c.prompt_tokens), 0),
                func.coalesce(func.sum(_req.c.completion_tokens), 0),
                func.coalesce(func.sum(_req.c.total_tokens), 0),
                func.coalesce(func.sum(_req.c.characters), 0),
            ).where(_req.c.job_id == job_id, _req.c.state == RequestState.SUCCEEDED.value)
        )
        .one()
    )
    calls = (
        session.connection()
        .execute(
            sa.select(
                func.count(),
                func.coalesce(func.sum(_att.c.total_tokens), 0),
            ).where(_att.c.job_id == job_id)
        )
        .one()
    )
    return {
        "prompt_tokens": int(lines[0]),
        "completion_tokens": int(lines[1]),
        "total_tokens": int(lines[2]),
        "characters": int(lines[3]),
        "calls": int(calls[0]),
        "billed_total_tokens": int(calls[1]),
    }


# --- distributed execution: what the broker should carry -----------------------------------------


def active_jobs(session: Session, *, mode: str) -> list[Job]:
    """Jobs of this mode whose lines executors may claim."""
    query = select(Job).where(Job.mode == mode, Job.status == JobStatus.RUNNING).order_by(col(Job.id))
    return list(session.exec(query))


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


def unqueued_lines(
    session: Session, job_id: int, *, lost_before: float | None, after_id: int = 0, limit: int = 5000
) -> list[tuple[int, str]]:
    """Pending lines with no live message: never enqueued, or enqueued before the broker lost it.

    Returns (id, endpoint) pairs in id order, from ``after_id`` on: a keyset page.
    """
    lost = _req.c.enqueued_at.is_(None)
    if lost_before is not None:
        lost = sa.or_(lost, _req.c.enqueued_at < lost_before)
    query = (
        sa.select(_req.c.id, _req.c.endpoint)
        .where(
            _req.c.job_id == job_id, _req.c.state == RequestState.PENDING.value, _req.c.id > after_id, lost
        )
        .order_by(_req.c.id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.connection().execute(query)]


def mark_enqueued(session: Session, request_ids: Sequence[int], *, now: float) -> None:
    """Stamp lines as carried by a broker message sent at ``now``."""
    if request_ids:
        stmt = sa.update(_req).where(_req.c.id.in_(list(request_ids))).values(enqueued_at=now)
        session.connection().execute(stmt)


def set_status(session: Session, job_id: int, status: JobStatus, *, allowed: Sequence[JobStatus]) -> Job:
    """Move a job to ``status`` if it is in one of the ``allowed`` statuses, else say why not."""
    job = get_job(session, job_id)
    if job.status not in allowed:
        raise JobStateError(
            f"job {job_id} is {job.status}; it can be {status} only from {', '.join(allowed)}"
        )
    set_job_status(session, job, status)
    return job


def usage_by_model(session: Session, job_id: int) -> list[tuple[str, int, int, int, int, int, int]]:
    """Per model: calls with usage, prompt, completion, cached, reasoning tokens, characters."""
    s = func.coalesce
    query = (
        sa.select(
            _req.c.model,
            func.count(_att.c.id),
            s(func.sum(_att.c.prompt_tokens), 0),
            s(func.sum(_att.c.completion_tokens), 0),
            s(func.sum(_att.c.cached_tokens), 0),
            s(func.sum(_att.c.reasoning_tokens), 0),
            s(func.sum(_att.c.characters), 0),
        )
        .select_from(_att.join(_req, _att.c.request_id == _req.c.id))
        .where(_att.c.job_id == job_id, _att.c.total_tokens.is_not(None) | _att.c.characters.is_not(None))
        .group_by(_req.c.model)
    )
    rows = session.connection().execute(query)
    return [(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows]


def job_models(session: Session, job_id: int) -> list[str]:
    """The models a job's lines name."""
    query = sa.select(_req.c.model).where(_req.c.job_id == job_id).distinct()
    return sorted(str(row[0]) for row in session.connection().execute(query))
