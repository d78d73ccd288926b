"""Progress of a run, for people and for logs: one line that fits the terminal, or a plain line
every few seconds: done/failed, rate, ETA and the pace (``workers.pace``).

On a terminal the line is drawn with rich's ``Live`` display: redrawn in place four times a
second, cut to the terminal's width (fields drop from the right, then the bar, before anything
wraps) and left on screen as the last line. Anywhere else (a pipe, ``nohup``, CI, a Celery log) a
plain line goes out every ``BATCHER_PROGRESS_INTERVAL`` seconds (default 5) and once at the end,
with no escape codes.

The line is a pure function of a ``ProgressSnapshot`` (``progress_line``), so other displays
(``status --watch``) and new fields reuse it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from workers.executor import Executor
from workers.pace import PaceSnapshot

PLAIN_EVERY_S = 5.0  # a log line every few seconds: enough to follow, few enough to read
REDRAW_EVERY_S = 0.25
MIN_BAR, MAX_BAR = 10, 30


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a run stands: what the progress line shows."""

    total: int
    done: int  # lines in a terminal state
    failed: int
    lines_per_s: float | None = None  # None: not known yet
    in_flight: int | None = None  # calls in flight; None: not known (or told by ``pace``)
    label: str = ""  # e.g. "job 3"
    pace: PaceSnapshot | None = None  # the executor's pace: req/s, limit, in flight, 429s

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate."""
        if not self.lines_per_s or self.done >= self.total:
            return None
        return (self.total - self.done) / self.lines_per_s


def progress_fields(snap: ProgressSnapshot) -> list[str]:
    """The line's fields, most important first."""
    share = snap.done / snap.total if snap.total else 1.0
    fields = [f"{snap.done}/{snap.total} {share:.0%}", f"failed {snap.failed}"]
    if snap.lines_per_s is not None:
        fields.append(f"{snap.lines_per_s:.1f} lines/s")
    eta = snap.eta_s
    fields.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA -")
    if snap.pace is not None:
        fields.append(snap.pace.describe())
    elif snap.in_flight is not None:
        fields.append(f"in flight {snap.in_flight}")
    return fields


def progress_line(snap: ProgressSnapshot, width: int | None = None) -> str:
    """The line: without ``width`` plain text for logs; with it, a bar too, never wider than ``width``."""
    fields = progress_fields(snap)
    if snap.label:
        fields.insert(0, snap.label)
    if width is None:
        return " · ".join(fields)
    while fields:
        text = " · ".join(fields)
        room = width - len(text) - 3  # "[", "]" and a space
        if room >= MIN_BAR:
            return _bar(snap, min(room, MAX_BAR)) + " " + text
        if len(text) <= width:
            return text
        fields.pop()
    return ""


def _bar(snap: ProgressSnapshot, width: int) -> str:
    filled = int((snap.done / snap.total if snap.total else 1.0) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class Progress:
    """Shows an executor's progress until closed: live on a terminal, plain lines elsewhere."""

    def __init__(
        self,
        *,
        total: int,
        already_done: int,
        already_failed: int,
        stream: TextIO | None = None,
        label: str = "",
        plain_every: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.base_done, self.base_failed, self.label = total, already_done, already_failed, label
        self.stream = stream or sys.stderr
        self.plain_every = plain_every
        self._clock = clock
        self._console = Console(file=self.stream, highlight=False)
        self._live: Live | None = None
        self._executor: Executor | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batcher-progress", daemon=True)
        self._start = clock()

    @property
    def on_terminal(self) -> bool:
        """Draw live only on a terminal."""
        return self._console.is_terminal

    def attach(self, executor: Executor) -> None:
        """Start showing this executor's progress (the runner's ``on_start`` hook)."""
        self._executor, self._start = executor, self._clock()
        if self.on_terminal:
            self._live = Live(console=self._console, auto_refresh=False, transient=False)
            self._live.start()
        self._thread.start()

    def snapshot(self) -> ProgressSnapshot:
        """The run as it stands (the lines done before this run included)."""
        stats = self._executor.stats if self._executor is not None else None
        succeeded, failed = (stats.succeeded, stats.failed) if stats else (0, 0)
        elapsed = max(self._clock() - self._start, 1e-6)
        return ProgressSnapshot(
            total=self.total,
            done=self.base_done + succeeded + failed,
            failed=self.base_failed + failed,
            lines_per_s=(succeeded + failed) / elapsed,
            label=self.label,
            pace=self._executor.pacing.snapshot() if self._executor is not None else None,
        )

    def _loop(self) -> None:
        every = REDRAW_EVERY_S if self._live is not None else self.plain_every
        while not self._stop.wait(every):
            self._show()

    def _show(self) -> None:
        snap = self.snapshot()
        if self._live is not None:
            self._live.update(Text(progress_line(snap, self._console.width), no_wrap=True), refresh=True)
        else:
            self.stream.write(progress_line(snap) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop, and leave the last line (on a terminal, the live line in its final state)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._executor is not None:
            self._show()
        if self._live is not None:
            self._live.stop()
