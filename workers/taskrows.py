"""The task engine's writes to the store, each its own transaction, and its small translations.

Each write commits before the engine goes on (``workers.taskengine``): the ``submitting`` row
before the submit call, the task id as soon as the answer is read, a task's end with its line's
result and attempt together.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from jobs import store as q
from jobs.db import Store
from jobs.models import ModalState, TaskState, utcnow
from jobs.records import AttemptRecord, LineResult
from jobs.store import ModelUsage
from jobs.store import tasks as tq
from workers.client import NoAnswer, RawResponse
from workers.endpoints.taskfamily import FollowUp
from workers.outcomes import Call
from workers.retry import Classification, Verdict, classify_response
from workers.taskfollow import follow_up_of


class TaskRows:
    """One job's task rows and results, written through the store."""

    def __init__(self, store: Store, job_id: int) -> None:
        self.store, self.job_id = store, job_id

    def read(self, request_ids: Sequence[int]) -> dict[int, tq.TaskRecord]:
        """The task rows of these lines."""
        with self.store.session() as session:
            return tq.task_rows(session, request_ids)

    def begin(self, request_id: int, now: float) -> tq.TaskRecord:
        """Commit the ``submitting`` row of a submit about to go."""
        with self.store.session() as session:
            tq.begin_submit(session, request_id=request_id, job_id=self.job_id, now=now)
        return tq.TaskRecord(request_id, TaskState.SUBMITTING, None, now, now, 0, None)

    def submitted(self, request_id: int, task_id: str, first_poll: float, calls: float | None) -> None:
        """Commit the relay's task id (and the per-call charges it said it billed)."""
        with self.store.session() as session:
            tq.mark_submitted(
                session, request_id=request_id, relay_task_id=task_id, next_poll_at=first_poll, calls=calls
            )

    def modal(self, record: tq.TaskRecord, state: ModalState | None, now: float) -> tq.TaskRecord:
        """Commit where the task's modal step is (``submitting`` before the modal submit goes)."""
        at = now if state is ModalState.SUBMITTING else record.modal_at
        with self.store.session() as session:
            tq.set_modal(session, record.request_id, state, at=at)
        return with_changes(record, modal=state, modal_at=at)

    def modal_taken(self, record: tq.TaskRecord, task_id: str, first_poll: float) -> tq.TaskRecord:
        """Commit a modal step the relay took: the task it answered with, charged once more."""
        with self.store.session() as session:
            tq.modal_taken(session, record.request_id, relay_task_id=task_id, next_poll_at=first_poll)
        return with_changes(
            record, state=TaskState.SUBMITTED, relay_task_id=task_id, next_poll_at=first_poll,
            modal=ModalState.TAKEN,
        )  # fmt: skip

    def in_flight(self, owner: str) -> list[ModelUsage]:
        """The charges of the job's tasks going that ``owner`` does not hold (for the budget)."""
        with self.store.session() as session:
            return tq.charged_in_flight(session, self.job_id, besides=owner)

    def forget(self, request_id: int) -> None:
        """Drop the row of a submit the relay refused outright."""
        with self.store.session() as session:
            tq.forget_submit(session, request_id)

    def polled(self, updates: list[tq.PollUpdate]) -> None:
        """Commit what a poll said of tasks still going."""
        with self.store.session() as session:
            tq.record_polls(session, updates)

    def end(
        self, attempts: list[AttemptRecord], result: LineResult, state: TaskState, *, has_row: bool,
        drop_row: bool = False, final_quota: int | None = None,
    ) -> None:  # fmt: skip
        """Commit a line's end: its task row (or, ``drop_row``, its row's removal) with the relay's
        final charge, attempts and result."""
        with self.store.session() as session:
            if drop_row:
                tq.forget_submit(session, result.request_id)
            elif has_row:
                tq.finish_task(session, result.request_id, state, final_quota=final_quota)
            if q.record_outcomes(session, attempts, [result]):
                q.complete_if_done(session, self.job_id)

    def unclaim(self, request_ids: list[int]) -> None:
        """Forget the claims of lines given back to wait for a poll (no poison-line count)."""
        if request_ids:
            with self.store.session() as session:
                tq.unclaim(session, request_ids)

    def follow_up(self, body: dict[str, Any]) -> FollowUp | str | None:
        """What a follow-up line adds to its body, or why it cannot go."""
        after = str(body["after"])
        with self.store.session() as session:
            origins = tq.origin_lines(session, self.job_id, [after])
        return follow_up_of(body, origins.get(after))


def with_changes(record: tq.TaskRecord, **changes: Any) -> tq.TaskRecord:
    """A task record with some fields changed."""
    return dataclasses.replace(record, **changes)


def modal_route(path: str) -> str:
    """The modal route beside a Midjourney route (its mode prefix kept)."""
    prefix = path.split("/mj/", 1)[0]
    return f"{prefix}/mj/submit/modal"


def poll_classification(answer: RawResponse | NoAnswer) -> Classification:
    """What a poll's answer means for the pace (a 429 slows it like any call's)."""
    if isinstance(answer, NoAnswer):
        return answer.classification
    return classify_response(answer.status, answer.headers, answer.content, now=time.time())


def as_call(answer: RawResponse | NoAnswer, classification: Classification | None) -> Call:
    """A task call as the pacing reads a finished call."""
    c = classification or Classification(Verdict.OK, "", "")
    return Call(c, answer if isinstance(answer, RawResponse) else None, utcnow(), 0)
