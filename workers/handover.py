"""When a chunk's task may return while its last calls still drain.

A worker process runs one message at a time. When the task waited for its chunk's last line to
be recorded, the process sent nothing from then until the next chunk's first call: the last
calls' round trips and their recording, the next message's delivery, its claim and its executor
(0.3–0.9 s at each boundary, measured). The shared limiter's grants of that moment went unused,
and since every worker runs at one shared pace their chunks end at about the same time: a
known limit on a sliding window got 96 % of it with two workers.

So the task returns once the lines it has not yet sent would all go within ``LEAD_S`` at the rate
its lines have been ending (over the last ``WINDOW_S``); the executor goes on in the background
on the process's loop (``workers.runtime``) and the next chunk is claimed while these lines go.
The message is acknowledged then (``task_acks_late``): the lines still going are leased, their
leases renewed by the executor, their answers journalled; a worker killed at that moment has them
taken back by the sweeper (at once on its own host, when the lease runs out on another one),
as for a line whose message was lost.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from workers.stats import Stats

LEAD_S = 1.0  # above a next message's delivery, claim and executor (0.3–0.5 s under load)
WINDOW_S = 1.0
SAMPLE_S = 0.05


def ready(*, left: int, rate: float, lead: float = LEAD_S) -> bool:
    """Whether ``left`` lines not yet sent would all go within ``lead`` s at ``rate`` lines/s."""
    return left <= 0 or (rate > 0 and left <= rate * lead)


class EndRate:
    """Lines ended per second over about the last ``WINDOW_S``, from samples of a running count."""

    def __init__(self, *, now: float, window: float = WINDOW_S) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(now, 0)])

    def add(self, now: float, ended: int) -> float:
        """Add a sample of the count; return the rate since the oldest sample kept."""
        self._samples.append((now, ended))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        then, before = self._samples[0]
        return (ended - before) / (now - then) if now > then else 0.0


async def handed_over(
    run: asyncio.Future[Stats],
    stats: Stats,
    lines: int,
    *,
    clock: Callable[[], float] = time.monotonic,
    sample: float = SAMPLE_S,
) -> None:
    """Return when ``run`` is done or its lines not yet sent are within ``LEAD_S`` of going.

    ``stats`` are the run's live counters; a line waiting for a retry counts as not yet sent.
    """
    rate = EndRate(now=clock())
    while not run.done():
        ended = stats.ended
        left = lines - ended - stats.lines_in_flight
        if ready(left=left, rate=rate.add(clock(), ended)):
            return
        await asyncio.wait([run], timeout=sample)
