"""Queries of relay tasks (``jobs.models.Task``): the row written before a submit, then its life.

The engine (``workers.taskengine``) writes a ``submitting`` row and commits it before the submit
call goes, and the relay's task id in the same row as soon as the answer is read: whatever
crashes, a row tells whether a submit may have happened and, if it did, which task to poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Session

from jobs.models import ModalState, Request, Task, TaskState
from jobs.records import Usage
from jobs.store.usage import ModelUsage

_task = Task.__table__  # type: ignore[attr-defined]
_req = Request.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task row as the engine reads it."""

    request_id: int
    state: TaskState
    relay_task_id: str | None
    submitted_at: float
    next_poll_at: float
    polls: int
    progress: str | None
    calls: float | None = None  # the per-call charges the relay said it billed (its other ratios)
    modal: ModalState | None = None  # its modal step, when it has one
    modal_at: float | None = None


@dataclass(frozen=True, slots=True)
class PollUpdate:
    """What one poll said of a task still going."""

    request_id: int
    state: TaskState
    progress: str | None
    relay_status: str | None
    next_poll_at: float


@dataclass(frozen=True, slots=True)
class OriginLine:
    """A line a follow-up names (``"after"``): its state and stored result."""

    request_id: int
    state: str
    response_body: str | None


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """A job's tasks by state, and the relay's progress of those polling (for ``status``)."""

    by_state: dict[str, int]
    progress: list[str]

    def __bool__(self) -> bool:
        return bool(self.by_state)


def task_rows(session: Session, request_ids: Sequence[int]) -> dict[int, TaskRecord]:
    """The task rows of these lines (lines never submitted have none)."""
    out: dict[int, TaskRecord] = {}
    for start in range(0, len(request_ids), 500):
        part = list(request_ids[start : start + 500])
        query = (
            sa.select(
                _task.c.request_id,
                _task.c.state,
                _task.c.relay_task_id,
                _task.c.submitted_at,
                _task.c.next_poll_at,
                _task.c.polls,
                _task.c.progress,
                _req.c.calls,
                _task.c.modal,
                _task.c.modal_at,
            )
            .select_from(_task.join(_req, _req.c.id == _task.c.request_id))
            .where(_task.c.request_id.in_(part))
        )
        for row in session.connection().execute(query):
            modal = ModalState(row.modal) if row.modal else None
            out[row[0]] = TaskRecord(row[0], TaskState(row[1]), *row[2:8], modal, row.modal_at)
    return out


def begin_submit(session: Session, *, request_id: int, job_id: int, now: float) -> None:
    """Record that a submit is about to go (the caller commits before sending it)."""
    session.connection().execute(
        sa.insert(_task).values(
            request_id=request_id,
            job_id=job_id,
            state=TaskState.SUBMITTING.value,
            submitted_at=now,
            next_poll_at=now,
            polls=0,
        )
    )


def mark_submitted(
    session: Session, *, request_id: int, relay_task_id: str, next_poll_at: float, calls: float | None = None
) -> None:
    """The relay took the task: its id, when to poll it first, and what it said it billed (``calls``)."""
    values = {
        "state": TaskState.SUBMITTED.value,
        "relay_task_id": relay_task_id,
        "next_poll_at": next_poll_at,
    }
    conn = session.connection()
    conn.execute(sa.update(_task).where(_task.c.request_id == request_id).values(values))
    if calls is not None:
        conn.execute(sa.update(_req).where(_req.c.id == request_id).values(calls=calls))


def forget_submit(session: Session, request_id: int) -> None:
    """The relay refused the submit outright (nothing charged): no task exists."""
    session.connection().execute(sa.delete(_task).where(_task.c.request_id == request_id))


def record_polls(session: Session, updates: Iterable[PollUpdate]) -> None:
    """Write what polls said of tasks still going."""
    rows = [
        {
            "rid": u.request_id,
            "st": u.state.value,
            "pr": u.progress,
            "rs": u.relay_status,
            "np": u.next_poll_at,
        }
        for u in updates
    ]
    if rows:
        stmt = (
            sa.update(_task)
            .where(_task.c.request_id == sa.bindparam("rid"))
            .values(
                state=sa.bindparam("st"),
                progress=sa.bindparam("pr"),
                relay_status=sa.bindparam("rs"),
                next_poll_at=sa.bindparam("np"),
                polls=_task.c.polls + 1,
            )
        )
        session.connection().execute(stmt, rows)


def finish_task(
    session: Session, request_id: int, state: TaskState, *, progress: str | None = None,
    final_quota: int | None = None,
) -> None:  # fmt: skip
    """The task ended (its line's result is written in the same transaction), with the relay's
    final charge when its answer said one."""
    values: dict[str, object] = {"state": state.value}
    if progress is not None:
        values["progress"] = progress
    if final_quota is not None:
        values["final_quota"] = final_quota
    session.connection().execute(sa.update(_task).where(_task.c.request_id == request_id).values(values))


def set_modal(
    session: Session, request_id: int, state: ModalState | None, *, at: float | None = None
) -> None:
    """Where the task's modal step is: ``submitting`` is committed before the modal submit goes."""
    values: dict[str, object] = {"modal": state.value if state else None}
    if at is not None:
        values["modal_at"] = at
    session.connection().execute(sa.update(_task).where(_task.c.request_id == request_id).values(values))


def modal_taken(session: Session, request_id: int, *, relay_task_id: str, next_poll_at: float) -> None:
    """A modal step was taken (and charged): the line now follows the task it answered with."""
    mark_submitted(session, request_id=request_id, relay_task_id=relay_task_id, next_poll_at=next_poll_at)
    set_modal(session, request_id, ModalState.TAKEN)


def drop_for_retry(session: Session, request_ids: sa.Select[tuple[int]], *, unknown: bool) -> None:
    """Drop the task rows of lines retried from the start; with ``unknown``, a line whose modal step
    got no answer keeps its task (charged once already) and its modal step goes again (``retry``)."""
    conn, modal = session.connection(), _task.c.modal
    step = (modal == ModalState.SUBMITTING.value) if unknown else sa.false()
    conn.execute(sa.delete(_task).where(_task.c.request_id.in_(request_ids), sa.or_(modal.is_(None), ~step)))
    conn.execute(
        sa.update(_task)
        .where(_task.c.request_id.in_(request_ids), step)
        .values(modal=ModalState.RETRY.value, state=TaskState.SUBMITTED.value, next_poll_at=0.0)
    )


def origin_lines(session: Session, job_id: int, custom_ids: Iterable[str]) -> dict[str, OriginLine]:
    """The lines of the job with these custom ids (what follow-ups name)."""
    names = sorted(set(custom_ids))
    query = sa.select(_req.c.custom_id, _req.c.id, _req.c.state, _req.c.response_body).where(
        _req.c.job_id == job_id, _req.c.custom_id.in_(names)
    )
    return {row[0]: OriginLine(row[1], row[2], row[3]) for row in session.connection().execute(query)}


def task_counts(session: Session, job_id: int) -> TaskCounts:
    """The job's tasks by state, and the progress of those the relay reported running."""
    conn = session.connection()
    by_state = (
        sa.select(_task.c.state, sa.func.count()).where(_task.c.job_id == job_id).group_by(_task.c.state)
    )
    counts = {str(row[0]): int(row[1]) for row in conn.execute(by_state)}
    running = sa.select(_task.c.progress).where(
        _task.c.job_id == job_id, _task.c.state == TaskState.POLLING.value, _task.c.progress.is_not(None)
    )
    return TaskCounts(counts, [str(row[0]) for row in conn.execute(running.limit(20))])


def unclaim(session: Session, request_ids: Sequence[int]) -> None:
    """Set the claims of lines waiting for a poll back to none."""
    session.connection().execute(sa.update(_req).where(_req.c.id.in_(list(request_ids))).values(claims=0))


def job_endpoints(session: Session, job_id: int) -> list[str]:
    """The routes a job's lines name, each once."""
    query = sa.select(_req.c.endpoint).where(_req.c.job_id == job_id).distinct()
    return sorted(str(row[0]) for row in session.connection().execute(query))


MODAL_PRICE = "mj_modal"  # new-api's model name of a modal step's charge (``CovertMjpActionToModelName``)


def charged_in_flight(session: Session, job_id: int, *, besides: str) -> list[ModelUsage]:
    """What the job's tasks still going cost, by model, but for the lines leased by ``besides``.

    A task is charged at submit and its attempt is written at its end, so until then its price is
    in neither the recorded spend nor another executor's reservations: a budget adds this.
    Each task counts its per-call charges (``calls``, else 1), and a modal step taken or in flight
    one ``mj_modal`` more.
    """
    going = (
        _task.c.job_id == job_id,
        _task.c.state.in_([s.value for s in (TaskState.SUBMITTING, TaskState.SUBMITTED, TaskState.POLLING)]),
        sa.or_(_req.c.lease_owner.is_(None), _req.c.lease_owner != besides),
    )
    joined = _task.join(_req, _req.c.id == _task.c.request_id)
    charges = sa.func.sum(sa.func.coalesce(_req.c.calls, 1))
    by_model = (
        sa.select(_req.c.model, _req.c.price_key, sa.func.count(), charges)
        .select_from(joined)
        .where(*going)
        .group_by(_req.c.model, _req.c.price_key)
    )
    steps = (
        sa.select(sa.func.count())
        .select_from(joined)
        .where(*going, _task.c.modal.in_([ModalState.TAKEN.value, ModalState.SUBMITTING.value]))
    )
    conn = session.connection()
    out = [
        ModelUsage(str(r[0]), int(r[2]), Usage(calls=Decimal(str(r[3]))), r[1])
        for r in conn.execute(by_model)
    ]
    if stepped := int(conn.execute(steps).scalar_one()):
        out.append(ModelUsage(MODAL_PRICE, stepped, Usage(calls=Decimal(stepped)), None))
    return out
