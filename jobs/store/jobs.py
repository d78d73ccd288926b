"""Queries of jobs: create, find, list, status, options, counts, and operations on whole jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from jobs.errors import JobNotFound, JobStateError
from jobs.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobStatus,
    Request,
    RequestState,
    utcnow,
)
from jobs.options import JobOptions
from jobs.store.bulk import id_in, lines_of_job
from jobs.store.common import NOT_TERMINAL, REQUEST_TABLE, bump_counter
from jobs.store.tasks import drop_for_retry

_req = REQUEST_TABLE


def create_job(
    session: Session, *, name: str, source_path: str, source_sha256: str, options: JobOptions | None = None
) -> Job:
    """Insert a new queued job and return it with its id."""
    stored = (options or JobOptions()).to_json()
    job = Job(name=name, source_path=source_path, source_sha256=source_sha256, options=stored)
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


def job_options(session: Session, job_id: int) -> JobOptions:
    """The options stored with the job."""
    return options_of(get_job(session, job_id))


def options_of(job: Job) -> JobOptions:
    """The options stored with this job row."""
    return JobOptions.from_json(job.options)


def update_options(session: Session, job_id: int, **changes: object) -> JobOptions:
    """Change some of the job's stored options (a new budget, say); None keeps one. Return them all."""
    job = get_job(session, job_id)
    options = options_of(job).merged(**changes)
    job.options = options.to_json()
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


def cancel_job(session: Session, job_id: int) -> int:
    """Cancel a job: lines not started become cancelled; lines in flight may finish. Return the count."""
    job = get_job(session, job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        raise JobStateError(f"job {job_id} is already {job.status}; nothing to cancel")
    set_job_status(session, job, JobStatus.CANCELLED)
    session.flush()
    return cancel_left(session, job_id)


def cancel_left(session: Session, job_id: int, *, now: float | None = None) -> int:
    """For a cancelled job: its pending lines, and running lines whose lease ran out, become
    cancelled (terminal), so the job finishes; lines still leased finish or come back here."""
    job = get_job(session, job_id)
    if job.status != JobStatus.CANCELLED:
        return 0
    expired = sa.and_(
        _req.c.state == RequestState.RUNNING.value,
        sa.or_(_req.c.lease_expires_at.is_(None), _req.c.lease_expires_at < (now or time.time())),
    )
    stmt = (
        sa.update(_req)
        .where(_req.c.job_id == job_id, sa.or_(_req.c.state == RequestState.PENDING.value, expired))
        .values(
            state=RequestState.CANCELLED.value, lease_owner=None, lease_expires_at=None, finished_at=utcnow()
        )
    )
    n = int(session.connection().execute(stmt).rowcount)
    if n:
        bump_counter(session, job_id, RequestState.CANCELLED.value, n)
        session.refresh(job)
    return n


def retry_failed(session: Session, job_id: int, *, unknown: bool = False) -> int:
    """Put a job's failed lines back to pending with a fresh attempt budget; return the count.

    A task line whose submit got no answer (``submit_unknown``: the relay may have the task) goes
    back only with ``unknown``; a retried task line loses its old task row, so it is submitted anew,
    unless only its modal step got no answer: that step goes again (``jobs.store.tasks.drop_for_retry``).
    """
    job = get_job(session, job_id)
    if job.status == JobStatus.CANCELLED:
        raise JobStateError(f"job {job_id} was cancelled; submit the file again with --new to rerun it")
    failed = sa.and_(_req.c.job_id == job_id, _req.c.state == RequestState.FAILED.value)
    if not unknown:
        failed = sa.and_(failed, sa.or_(_req.c.error_code.is_(None), _req.c.error_code != SUBMIT_UNKNOWN))
    drop_for_retry(session, sa.select(_req.c.id).where(failed), unknown=unknown)
    stmt = (
        sa.update(_req)
        .where(failed)
        .values(state=RequestState.PENDING.value, attempts=0, claims=0, finished_at=None, enqueued_at=None)
    )
    n = int(session.connection().execute(stmt).rowcount)
    if n:
        bump_counter(session, job_id, RequestState.FAILED.value, -n)
        session.refresh(job)
        job.finished_at = None
        set_job_status(session, job, JobStatus.QUEUED)
    return n


SUBMIT_UNKNOWN = "submit_unknown"  # a task submit that got no answer (``workers.taskcalls``)


def fail_overclaimed(
    session: Session, job_id: int, *, max_claims: int, request_ids: Sequence[int] | None = None
) -> int:
    """Fail lines claimed ``max_claims`` times without finishing: they kill their executor.

    Only ``request_ids`` when given (a message's lines, about to be claimed): without them the
    statement reads every line of the job not yet done, a second at 500,000 on PostgreSQL.
    """
    where = [
        _req.c.state.in_(NOT_TERMINAL),
        _req.c.claims >= max_claims,
        sa.or_(_req.c.lease_expires_at.is_(None), _req.c.lease_expires_at < time.time()),
    ]
    if request_ids is None:
        where.append(_req.c.job_id == job_id)
    else:  # by primary key alone (see ``lines_of_job``)
        ids = lines_of_job(session.connection(), job_id, request_ids)
        if not ids:
            return 0
        where.append(id_in(session.connection(), _req.c.id, ids))
    stmt = (
        sa.update(_req)
        .where(*where)
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
    if n:  # the job's row is every flush's too: no write, no wait for it
        bump_counter(session, job_id, RequestState.FAILED.value, n)
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


def active_jobs(session: Session, *, mode: str) -> list[Job]:
    """Jobs of this mode whose lines executors may claim."""
    query = select(Job).where(Job.mode == mode, Job.status == JobStatus.RUNNING).order_by(col(Job.id))
    return list(session.exec(query))


def set_status(session: Session, job_id: int, status: JobStatus, *, allowed: Sequence[JobStatus]) -> Job:
    """Move a job to ``status`` if it is in one of the ``allowed`` statuses, else say why not."""
    job = get_job(session, job_id)
    if job.status not in allowed:
        raise JobStateError(
            f"job {job_id} is {job.status}; it can be {status} only from {', '.join(allowed)}"
        )
    set_job_status(session, job, status)
    return job
