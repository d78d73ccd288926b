"""Table handles and state lists shared by the store's query modules."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.models import Attempt, Job, Request, RequestState, VectorBlock

REQUEST_TABLE: Any = Request.__table__  # type: ignore[attr-defined]
ATTEMPT_TABLE: Any = Attempt.__table__  # type: ignore[attr-defined]
JOB_TABLE: Any = Job.__table__  # type: ignore[attr-defined]
VECTOR_BLOCK_TABLE: Any = VectorBlock.__table__  # type: ignore[attr-defined]
NOT_TERMINAL = [RequestState.PENDING.value, RequestState.RUNNING.value]


def bump_counter(session: Session, job_id: int, state: str, n: int) -> None:
    column = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}[state]
    job_table = Job.__table__  # type: ignore[attr-defined]
    stmt = sa.update(job_table).where(job_table.c.id == job_id).values({column: job_table.c[column] + n})
    session.connection().execute(stmt)
