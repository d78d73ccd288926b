"""How a task line ends: its one terminal result, the attempts it bills, and its budget settled.

A line ends once (``TaskLine.done``): succeeded (its files fetched first, with ``download``) or
failed with a code (a success costs the relay's final charge when its answer said one:
``TaskView.quota``). Its result, its attempts (the submit's, and its modal step's when it had one:
``workers.taskresults.step_attempts``) and its task row's end are written in one transaction, so
a line has exactly one terminal result and its charges are counted with it, never before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.models import TaskState
from jobs.records import AttemptRecord, LineResult
from workers.downloads import Downloader
from workers.endpoints.taskfamily import TaskView
from workers.stats import Stats
from workers.taskbudget import TaskBudget
from workers.tasklines import TaskConfig, TaskLine
from workers.taskresults import Saved, failed, save_files, step_attempts, succeeded, summary
from workers.taskrows import TaskRows


class TaskEnds:
    """Ends the engine's lines; see the module docstring."""

    def __init__(
        self, *, rows: TaskRows, budget: TaskBudget, stats: Stats, downloader: Downloader,
        config: TaskConfig, root: str,
    ) -> None:  # fmt: skip
        self.rows, self.budget, self.stats, self.downloader = rows, budget, stats, downloader
        self.config, self.root = config, root

    async def succeed(self, line: TaskLine, view: TaskView) -> None:
        """End the line succeeded with the task's result (its files fetched first)."""
        saved: Saved | None = None
        if self.config.download:
            saved = await save_files(
                self.downloader,
                view.urls,
                folder=self.config.results_dir,
                request_id=line.item.request_id,
                root=self.root,
            )
        assert line.record is not None
        attempt, result = succeeded(
            line.item,
            summary(view, saved),
            submitted_at=line.record.submitted_at,
            owner=self.config.owner,
            usage=line.billed(),
            relay_quota=view.quota,
        )
        steps = step_attempts(line.item, line.record, owner=self.config.owner, succeeded=True, charged=True)
        await self._end(line, [attempt, *steps], result, TaskState.SUCCEEDED, final_quota=view.quota)

    async def fail(
        self, line: TaskLine, code: str, message: str, *, status: int | None, sent: bool,
        charged: bool = True, body: dict[str, Any] | None = None, at: float,
    ) -> None:  # fmt: skip
        """End the line failed with ``code``; ``charged`` False when the relay refunds the task."""
        start = line.record.submitted_at if line.record is not None else at
        attempt, result = failed(
            line.item,
            code=code,
            message=message,
            submitted_at=start,
            owner=self.config.owner,
            status=status,
            sent=sent and charged,
            body=body,
        )
        steps = step_attempts(
            line.item, line.record, owner=self.config.owner, succeeded=False, charged=sent and charged
        )
        # No task at the relay and nothing charged (a refused submit): its row goes with the end.
        drop = line.record is not None and line.record.relay_task_id is None and not (sent and charged)
        await self._end(line, [attempt, *steps], result, TaskState.FAILED, drop_row=drop)

    async def _end(
        self, line: TaskLine, attempts: list[AttemptRecord], result: LineResult, state: TaskState,
        *, drop_row: bool = False, final_quota: int | None = None,
    ) -> None:  # fmt: skip
        line.done = True
        self.stats.count(result)
        spent = result.usage is not None or any(a.sent and a.status_code is None for a in attempts)
        self.budget.end(line.item.request_id, spent=spent)
        has_row = line.record is not None
        await asyncio.to_thread(
            self.rows.end,
            attempts,
            result,
            state,
            has_row=has_row,
            drop_row=drop_row,
            final_quota=final_quota,
        )
