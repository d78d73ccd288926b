"""Executors at work: each reports its calls in flight, so ``status`` can sum them for a job."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.models import Executor

_ex = Executor.__table__  # type: ignore[attr-defined]
FRESH_S = 3.0  # a report older than this is of an executor that died: not counted


def report_in_flight(
    session: Session, *, owner: str, job_id: int, calls: int, now: float | None = None
) -> None:
    """Record that ``owner`` has ``calls`` calls in flight for ``job_id`` now."""
    values = {"job_id": job_id, "in_flight": calls, "seen_at": now or time.time()}
    conn = session.connection()
    if not conn.execute(sa.update(_ex).where(_ex.c.owner == owner).values(values)).rowcount:
        conn.execute(sa.insert(_ex).values(owner=owner, **values))


def forget_executor(session: Session, owner: str) -> None:
    """The executor ended: its row goes."""
    session.connection().execute(sa.delete(_ex).where(_ex.c.owner == owner))


def calls_in_flight(session: Session, job_id: int, *, now: float | None = None) -> int:
    """The job's calls in flight now, summed over the executors that reported lately."""
    fresh = _ex.c.seen_at >= (now or time.time()) - FRESH_S
    query = sa.select(func.coalesce(func.sum(_ex.c.in_flight), 0)).where(_ex.c.job_id == job_id, fresh)
    return int(session.connection().execute(query).scalar_one())
