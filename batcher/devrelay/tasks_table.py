"""The stand-in relay's task table and its clock: every async task (Midjourney, Suno, video) it holds.

A task's status is not advanced by a background loop: it is a pure function of how long ago the
task started (``stage_at``), on the table's clock, scaled by ``RelayConfig.task_seconds`` (the time
from submit to the end). So a test sees a whole lifecycle in a second, and a test that wants exact
steps moves the clock itself (``TaskTable.advance``, ``RelayServer.advance_tasks``).

The lifecycle, as fractions of ``task_seconds``: before 0.1 the relay has not polled its upstream
yet (new-api's initial row: MJ ``""``, Suno/video ``NOT_START``); then submitted (0.1), queued
(0.2), running with a growing progress (0.3), and done at 1. A stuck task stays running at
``STUCK_PROGRESS`` until the relay's own deadline fails it (MJ 1 h, Suno/video 24 h, or
``RelayConfig.task_timeout``), refunded like any failure (``tasks_billing``).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from batcher.devrelay.tasks_billing import Ledger

STUCK_PROGRESS = 37  # where a stuck task's progress stops
MJ_DEADLINE = 3600.0  # new-api fails MJ tasks older than an hour
TASK_DEADLINE = 86400.0  # and Suno/video tasks older than TASK_TIMEOUT_MINUTES (1440)
MJ_TIMEOUT_REASON = "上游任务超时（超过1小时）"


class Family(Enum):
    """Which API a task came through (its ids and its deadline depend on it)."""

    MJ = "mj"
    SUNO = "suno"
    VIDEO = "video"
    LUMA = "luma"
    RUNWAY = "runway"


class Outcome(Enum):
    """How a task will end, decided at submit (by a fault, or success)."""

    SUCCESS = "success"
    FAILURE = "failure"
    STUCK = "stuck"


class Phase(Enum):
    """Where a task is in its lifecycle (each family names these its own way)."""

    WAITING = "waiting"  # the relay has not polled its upstream yet
    MODAL = "modal"  # MJ: waits for /mj/submit/modal
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Stage:
    """A task's phase and progress (0–100) at one moment."""

    phase: Phase
    progress: int


def stage_at(elapsed: float, seconds: float, outcome: Outcome) -> Stage:
    """The stage ``elapsed`` seconds after the start of a task lasting ``seconds``."""
    share = elapsed / seconds if seconds > 0 else float("inf")
    if share < 0.1:
        return Stage(Phase.WAITING, 0)
    if share < 0.2:
        return Stage(Phase.SUBMITTED, 0)
    if share < 0.3:
        return Stage(Phase.QUEUED, 0)
    if outcome is Outcome.STUCK:
        return Stage(Phase.RUNNING, min(STUCK_PROGRESS, _running_progress(share)))
    if share < 1:
        return Stage(Phase.RUNNING, _running_progress(share))
    return Stage(Phase.SUCCEEDED if outcome is Outcome.SUCCESS else Phase.FAILED, 100)


def _running_progress(share: float) -> int:
    return max(1, min(99, int((share - 0.3) / 0.7 * 100)))


@dataclass
class Task:
    """One task the relay holds; ``body`` is the submit's body, ``owner`` the key that submitted it."""

    id: str
    family: Family
    action: str
    model: str
    owner: str
    submitted: float
    body: dict[str, Any]
    outcome: Outcome = Outcome.SUCCESS
    fail_reason: str = ""
    file_prefix: str = ""  # "missing-" (404) or "slow-" (hangs): how its result files answer
    origin_id: str = ""  # the task an action or modal acted on
    awaiting_modal: bool = False
    started: float = 0.0  # when its work started: submit, or the modal's submit
    done_at_submit: bool = False  # MJ code 21 "existed": already finished
    row: int = 0
    final_quota: int | None = None  # re-priced to this on success (Kling's units); None: the pre-charge
    extra: dict[str, Any] = field(default_factory=dict)  # the family's own fields (route, seconds…)


def apply_faults(task: Task, fault: str | None, fail_reason: str) -> None:
    """How a task drawn a fault will end, or how its files answer."""
    if fault == "task_fail":
        task.outcome, task.fail_reason = Outcome.FAILURE, fail_reason
    elif fault == "task_stuck":
        task.outcome = Outcome.STUCK
    elif fault == "unfetchable":
        task.file_prefix = "missing-"
    elif fault == "result_timeout":
        task.file_prefix = "slow-"


class TaskClock:
    """Wall-clock time plus an offset a test may move forward."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now, self.offset = now, 0.0

    def __call__(self) -> float:
        return self._now() + self.offset


class TaskTable:
    """The tasks by id, the clock their stages are read on, and the billing ledger."""

    def __init__(
        self, *, seconds: float, timeout: float | None, ids: Iterator[int] | None = None, seed: int = 0
    ) -> None:
        self.seconds, self.timeout, self.seed = seconds, timeout, seed
        self.clock = TaskClock()
        self.ledger = Ledger()
        self.tasks: dict[str, Task] = {}
        self._ids = ids if ids is not None else itertools.count(1)

    def advance(self, seconds: float) -> None:
        """Move the tasks' clock forward (a test's way to step through a lifecycle exactly)."""
        self.clock.offset += seconds

    def new_id(self, family: Family) -> tuple[str, int]:
        """A fresh task id in the family's form, and its row number."""
        row = next(self._ids)
        if family is Family.MJ:  # MJ proxy: milliseconds plus three digits
            return str(1_760_000_000_000_000 + row), row
        digest = hashlib.sha256(f"task-{self.seed}-{row}".encode()).hexdigest()
        if family in (Family.LUMA, Family.RUNWAY):  # their upstreams' uuids
            return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}", row
        return "task_" + digest[:32], row

    def add(self, task: Task) -> Task:
        task.started = task.started or task.submitted
        self.tasks[task.id] = task
        return task

    def find(self, task_id: Any, owner: str) -> Task | None:
        """The caller's task with that id (another key's task is not found, as in new-api)."""
        task = self.tasks.get(str(task_id)) if isinstance(task_id, str | int) else None
        return task if task is not None and task.owner == owner else None

    def deadline(self, task: Task) -> float:
        default = MJ_DEADLINE if task.family is Family.MJ else TASK_DEADLINE
        return self.timeout if self.timeout is not None else default

    def stage(self, task: Task) -> Stage:
        """The task's stage now; a failure seen for the first time is refunded here, a success
        settled (re-priced, when its ``final_quota`` says so)."""
        now = self.clock()
        if task.done_at_submit:
            return Stage(Phase.SUCCEEDED, 100)
        if task.awaiting_modal:
            return Stage(Phase.MODAL, 0)
        stage = stage_at(now - task.started, self.seconds, task.outcome)
        finished = stage.phase in (Phase.SUCCEEDED, Phase.FAILED)
        if not finished and now - task.submitted >= self.deadline(task):
            task.outcome, task.fail_reason = Outcome.FAILURE, self.timeout_reason(task)
            stage = Stage(Phase.FAILED, 100)
        if stage.phase is Phase.FAILED:
            self.ledger.refund(task.id, task.fail_reason)
        elif stage.phase is Phase.SUCCEEDED and task.final_quota is not None:
            self.ledger.settle(task.id, task.final_quota)
        return stage

    def timeout_reason(self, task: Task) -> str:
        if task.family is Family.MJ:
            return MJ_TIMEOUT_REASON
        return f"任务超时（{self.deadline(task) / 60:g}分钟）"

    def settle(self) -> None:
        """Look at every task once (refunds the failed ones), as the relay's poll would."""
        for task in self.tasks.values():
            self.stage(task)

    def snapshot(self) -> dict[str, Any]:
        """Tasks by family and phase, and the ledger (``/_stats``' ``tasks``)."""
        self.settle()
        phases: dict[str, dict[str, int]] = {}
        for task in self.tasks.values():
            by_phase = phases.setdefault(task.family.value, {})
            phase = self.stage(task).phase.value
            by_phase[phase] = by_phase.get(phase, 0) + 1
        return {"submitted": len(self.tasks), "phases": phases, "billing": self.ledger.snapshot()}
