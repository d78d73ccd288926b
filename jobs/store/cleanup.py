"""Deleting jobs: their attempts, lines, vector blocks, cache keys and job rows in one transaction;
finding old jobs.

The input files (blobs) no remaining job uses go in the same transaction; those kept in the shared
blob folder are named in the footprint, for the caller to remove after the commit.

Result files on disk are the caller's: it lists them (``files.audio_paths``) before the rows go
and removes them after the commit, so a failed delete never leaves lines pointing at nothing.
A running job is refused: its executors would write results for lines that no longer exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from jobs.errors import JobStateError
from jobs.models import Job, JobStatus, VectorBlock
from jobs.store.blobs import unlink_jobs
from jobs.store.cache import forget_lines
from jobs.store.common import ATTEMPT_TABLE, REQUEST_TABLE
from jobs.store.jobs import get_job
from jobs.store.rollup import forget_jobs

_req, _att = REQUEST_TABLE, ATTEMPT_TABLE
_vec = VectorBlock.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JobFootprint:
    """What deleting jobs removes from the store."""

    jobs: int
    lines: int
    attempts: int
    folder_blobs: tuple[str, ...] = ()  # sha256 of deleted blobs whose bytes are in BATCHER_BLOB_DIR


def footprint(session: Session, job_ids: Sequence[int]) -> JobFootprint:
    """How many lines and attempts these jobs hold."""
    ids = list(job_ids)
    lines = session.connection().execute(sa.select(func.count()).where(_req.c.job_id.in_(ids))).scalar_one()
    calls = session.connection().execute(sa.select(func.count()).where(_att.c.job_id.in_(ids))).scalar_one()
    return JobFootprint(len(ids), int(lines), int(calls))


def delete_jobs(session: Session, job_ids: Sequence[int]) -> JobFootprint:
    """Delete the jobs with their lines and attempts; refuse a running one (it must stop first)."""
    for job_id in job_ids:
        job = get_job(session, job_id)
        if job.status == JobStatus.RUNNING:
            raise JobStateError(
                f"job {job_id} is running; `batcher pause {job_id}` or `batcher cancel {job_id}` first"
            )
    removed = footprint(session, job_ids)
    ids = list(job_ids)
    conn = session.connection()
    conn.execute(sa.delete(_att).where(_att.c.job_id.in_(ids)))
    forget_jobs(session, ids)
    blocks = sa.select(_req.c.vector_block).where(_req.c.job_id.in_(ids), _req.c.vector_block.is_not(None))
    conn.execute(sa.delete(_vec).where(_vec.c.id.in_(blocks.scalar_subquery())))
    forget_lines(session, sa.select(_req.c.id).where(_req.c.job_id.in_(ids)).scalar_subquery())
    conn.execute(sa.delete(_req).where(_req.c.job_id.in_(ids)))
    conn.execute(sa.delete(Job.__table__).where(Job.__table__.c.id.in_(ids)))  # type: ignore[attr-defined]
    session.expunge_all()
    return replace(removed, folder_blobs=tuple(unlink_jobs(session, ids)))


def jobs_older_than(session: Session, cutoff: datetime, statuses: Sequence[JobStatus]) -> list[Job]:
    """Jobs in these statuses that finished (or, never finished, were created) before ``cutoff``."""
    when = func.coalesce(col(Job.finished_at), col(Job.created_at))
    query = select(Job).where(when < cutoff, col(Job.status).in_([s.value for s in statuses]))
    return list(session.exec(query.order_by(col(Job.id))))
