"""A live progress line for long runs: done/failed counts, rate, ETA and the pace.

It reads the executor's counters from a background thread twice a second and redraws one line
on stderr. It draws only on a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from workers.executor import Executor
from workers.pace import PaceSnapshot


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(
    *, done: int, failed: int, total: int, rate: float, pace: PaceSnapshot, width: int = 24
) -> str:
    """One progress line: a bar, counts, rate and ETA, then the pace (req/s, limit, in flight, 429s)."""
    fraction = done / total if total else 1.0
    filled = int(fraction * width)
    eta = format_duration((total - done) / rate) if rate > 0 and done < total else "-"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {fraction:4.0%}"
        f" · failed {failed} · {rate:.1f} lines/s · ETA {eta} · {pace.describe()}"
    )


class Progress:
    """Redraws a progress line for an executor until stopped."""

    def __init__(
        self, *, total: int, already_done: int, already_failed: int, stream: TextIO | None = None
    ) -> None:
        self.total, self.base_done, self.base_failed = total, already_done, already_failed
        self.stream = stream or sys.stderr
        self._executor: Executor | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.monotonic()

    @property
    def enabled(self) -> bool:
        """Draw only on a terminal."""
        return self.stream.isatty()

    def attach(self, executor: Executor) -> None:
        """Start drawing for this executor (the runner's ``on_start`` hook)."""
        self._executor = executor
        if self.enabled:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def _draw(self, end: str = "") -> None:
        if self._executor is None:
            return
        stats = self._executor.stats
        finished = stats.succeeded + stats.failed
        rate = finished / max(time.monotonic() - self._start, 1e-6)
        line = progress_line(
            done=self.base_done + finished,
            failed=self.base_failed + stats.failed,
            total=self.total,
            rate=rate,
            pace=self._executor.pacing.snapshot(),
        )
        self.stream.write("\r" + line + end)
        self.stream.flush()

    def close(self) -> None:
        """Stop drawing and leave the last line on screen."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._draw(end="\n")
