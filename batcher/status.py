"""A job's progress as one snapshot: counts by state, usage, and rates between two snapshots.

``batcher status --watch`` takes a snapshot every two seconds; the rates (lines/s, tokens/s) and
the ETA come from the difference between the last two, so they describe all workers together.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text
from sqlmodel import Session

from batcher.progress import ProgressSnapshot, format_duration, progress_line
from batcher.render import job_dict, printable, table
from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.models import Job
from jobs.store.tasks import TaskCounts, task_counts
from workers.budget import spend_of
from workers.pace import PaceSnapshot
from workers.prices import load_prices

Speed = dict[str, float | None]  # lines_per_s, tokens_per_s, eta_s (None: not known yet)


@dataclass(frozen=True)
class Snapshot:
    """A job as stored at one moment."""

    job: dict[str, Any]
    counts: dict[str, int]
    usage: q.JobUsage
    failures: dict[str, int] = field(default_factory=dict)  # failed lines by error code
    cost_usd: Decimal | None = None  # of the calls that answered so far; None: no price known
    in_flight: int = 0  # calls in flight now, summed over the executors at work
    pace: PaceSnapshot | None = None  # the job's pace, shown below the rest
    tasks: TaskCounts | None = None  # a job of task lines: its relay tasks by state
    taken_at: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        """Lines in a terminal state."""
        return self.counts["succeeded"] + self.counts["failed"] + self.counts["cancelled"]


def take_snapshot(store: Store, job_id: int) -> Snapshot:
    """Read the job, its counts and its usage in one transaction."""
    with store.session() as session:
        job = q.get_job(session, job_id)
        return Snapshot(
            job_dict(job),
            q.state_counts(session, job_id),
            q.usage_totals(session, job_id),
            q.failures_by_code(session, job_id),
            cost_so_far(session, job),
            q.calls_in_flight(session, job_id),
            tasks=task_counts(session, job_id) or None,
        )


def cost_so_far(session: Session, job: Job) -> Decimal | None:
    """Spend of the job's answered calls at its prices (None when no model of it has a price)."""
    assert job.id is not None
    options = q.options_of(job)
    try:
        book = load_prices([Path(p) for p in options.prices])
    except BatcherError:  # a price file that moved: status still shows the rest
        return None
    rows = q.usage_by_model(session, job.id)
    if rows and all(book.lookup(row.model) is None for row in rows):
        return None
    return spend_of(rows, book, book.group_ratio(options.group))


def rates(before: Snapshot | None, after: Snapshot) -> dict[str, float | None]:
    """Lines/s, tokens/s and seconds left, from two snapshots (None without an earlier one)."""
    if before is None or after.taken_at <= before.taken_at:
        return {"lines_per_s": None, "tokens_per_s": None, "eta_s": None}
    elapsed = after.taken_at - before.taken_at
    lines = (after.done - before.done) / elapsed
    tokens = (after.usage.billed_total_tokens - before.usage.billed_total_tokens) / elapsed
    left = after.job["total"] - after.done
    return {"lines_per_s": lines, "tokens_per_s": tokens, "eta_s": left / lines if lines > 0 else None}


def render(snapshot: Snapshot, speed: dict[str, float | None]) -> str:
    """The status as text: a headline, lines by state, usage and speed."""
    job, counts = snapshot.job, snapshot.counts
    head = f"job {job['id']} ({printable(job['name'])}): {job['status']}, {snapshot.done}/{job['total']} done"
    if job.get("last_error"):
        head += f"\n  {printable(job['last_error'])}"
    states = [(k, v) for k, v in counts.items()] + [("total", job["total"])]
    parts = [
        head,
        table(("state", "lines"), states),
        table(("usage", "value"), list(asdict(snapshot.usage).items())),
    ]
    if snapshot.tasks is not None:
        parts.append(tasks_line(snapshot.tasks))
    if snapshot.cost_usd is not None:
        parts.append(f"cost so far: ${snapshot.cost_usd:.4f} (`batcher usage {job['id']}` for the account)")
    if snapshot.failures:
        by_code = ", ".join(f"{code} {n}" for code, n in snapshot.failures.items())
        parts.append(f"failed by error: {by_code}; see them with `batcher errors {job['id']}`")
    if speed["lines_per_s"] is not None:
        eta = format_duration(speed["eta_s"]) if speed["eta_s"] is not None else "-"
        parts.append(
            f"{speed['lines_per_s']:.1f} lines/s · {speed['tokens_per_s'] or 0:.0f} tokens/s · "
            f"{snapshot.in_flight} calls in flight · ETA {eta}"
        )
    else:
        parts.append(f"{snapshot.in_flight} calls in flight")
    if snapshot.pace is not None:
        parts.append("pace: " + snapshot.pace.describe())
    return "\n\n".join(parts)


def tasks_line(tasks: TaskCounts) -> str:
    """A task job's relay tasks: submitted, polling (with the relay's progress), done."""
    n = tasks.by_state.get
    submitted = n("submitting", 0) + n("submitted", 0)
    progress = f" ({', '.join(tasks.progress)})" if tasks.progress else ""
    done = n("succeeded", 0) + n("failed", 0)
    return (
        f"tasks: {submitted} submitted, {n('polling', 0)} polling{progress}, {done} done "
        f"({n('succeeded', 0)} succeeded, {n('failed', 0)} failed)"
    )


def progress_of(snapshot: Snapshot, speed: dict[str, float | None]) -> ProgressSnapshot:
    """The snapshot as the one-line progress display shows it."""
    job = snapshot.job
    return ProgressSnapshot(
        total=job["total"],
        done=snapshot.done,
        failed=snapshot.counts["failed"],
        lines_per_s=speed["lines_per_s"],
        in_flight=snapshot.in_flight,
        label=f"job {job['id']} {job['status']}",
    )


class StatusScreen:
    """Where ``status --watch`` shows each snapshot: redrawn in place on a terminal (rich ``Live``);
    elsewhere one plain progress line per refresh, and the whole status at the end."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stdout, highlight=False)
        self._live = Live(console=self.console, auto_refresh=False) if self.console.is_terminal else None
        self._last = ""

    def show(self, snapshot: Snapshot, speed: dict[str, float | None]) -> None:
        """Show one refresh."""
        self._last = render(snapshot, speed)
        if self._live is not None:
            if not self._live.is_started:
                self._live.start()
            self._live.update(Text(self._last), refresh=True)
        else:
            self.console.file.write(progress_line(progress_of(snapshot, speed)) + "\n")
            self.console.file.flush()

    def close(self) -> None:
        """Leave the last status on screen."""
        if self._live is not None:
            if self._live.is_started:
                self._live.stop()
        elif self._last:
            self.console.file.write("\n" + self._last + "\n")
