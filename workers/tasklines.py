"""The task engine's records: its configuration, and a claimed task line with where its task is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from jobs.records import Usage, WorkItem
from jobs.store import tasks as tq
from workers.endpoints.taskfamily import TaskFamily
from workers.taskcalls import DEFAULT_POLL_INTERVAL_S


@dataclass(frozen=True)
class TaskConfig:
    """How the engine runs task lines."""

    results_dir: Path
    owner: str
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    deadline: float | None = None  # seconds a task may take (else the relay's: its family's)
    download: bool = True
    max_attempts: int = 5
    lease_seconds: float = 300.0
    control_interval: float = 1.0  # a pause or cancel is seen within this


@dataclass
class TaskLine:
    """A claimed task line and where its task is."""

    item: WorkItem
    family: TaskFamily
    body: dict[str, Any]
    record: tq.TaskRecord | None = None
    tries: int = 0
    retry_at: float = 0.0
    done: bool = False
    relay_status: str | None = None  # the relay's own word for where the task is

    def due_at(self, now: float, poll_interval: float) -> float:
        """When the line next needs the engine: its task's next poll, else its submit's turn."""
        if self.record is not None:
            return self.record.next_poll_at
        return self.retry_at if self.retry_at > now else now + poll_interval

    def billed(self) -> Usage:
        """What the task billed: the ratios the relay sent with the submit, else the family's rule."""
        if self.record is not None and self.record.calls is not None:
            return Usage(calls=Decimal(str(self.record.calls)))
        return self.family.expected_usage(self.body)


def poll_batches(lines: Iterable[TaskLine], now: float) -> list[list[TaskLine]]:
    """The lines whose poll is due, grouped by family and route, in batches of the family's size."""
    groups: dict[tuple[str, str], list[TaskLine]] = {}
    for line in lines:
        if line.record is not None and line.record.next_poll_at <= now:
            groups.setdefault((line.family.name, line.item.endpoint.path), []).append(line)
    return [
        g[i : i + g[0].family.poll_batch]
        for g in groups.values()
        for i in range(0, len(g), g[0].family.poll_batch)
    ]
