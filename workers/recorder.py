"""The records of a run on their way to the store: buffered, written in batches, leases kept.

Every attempt and terminal result goes into a buffer that is written in one transaction every
``flush_interval`` seconds or once ``flush_size`` records wait, so a crash loses only what was in
flight, without a transaction per call. From their claim to their result, lines' leases are
renewed (every third of the lease), those waiting their turn as well as those in a call; lines the
run will not finish are given back at once.

An ``Observer`` (``workers.metrics``), when metrics are on, is told of each call leaving and
of each record as it is buffered.

With a journal (``workers.journal``), each record is also appended to a local file the moment it
lands, and a sent marker before each call, so a kill loses only the calls in flight; after each
batch the store committed, the journal is told how far the store has caught up.

The buffer is bounded: once ``backlog`` records wait (a store slower than the relay, PostgreSQL
under load, say), the claimed lines that ``holding`` hands out stop until a batch is written. A
run then goes at the store's pace with flat memory; without the bound the buffer grew with the
job (flushes of 1,285, 4,883, 10,280, 20,560 records in turn on a loaded PostgreSQL, and 601 MB
of RSS at a million lines), each flush slower than the last.

Used as an async context: entering starts the writer and the renewer; leaving writes what is
left and raises a store error that the writer met.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

from jobs.records import AttemptRecord, LineResult, WorkItem
from workers.journal import Journal
from workers.metrics import Observer
from workers.ratelimit import PaceView

STORE_BROKEN = "the store could not be written"
BACKLOG_FLUSHES = 2  # records waiting for the store, in flushes, before intake stops
MIN_BACKLOG = 4096  # at least: a chunk's packed calls land 256 results each


class Sink(Protocol):
    """The store as the core sees it; called from a worker thread, never on the event loop."""

    def write(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        """Record attempts and terminal results in one transaction."""
        ...

    def renew(self, request_ids: Sequence[int], until: float) -> None:
        """Extend the leases on lines still running."""
        ...

    def release(self, request_ids: Sequence[int]) -> None:
        """Give back lines the core will not finish."""
        ...

    def halt_reason(self) -> str | None:
        """Why the core should start no new call (job paused, cancelled, stopped), or None."""
        ...

    def report_in_flight(self, calls: int | None) -> None:
        """Tell others how many calls this executor has in flight (None: it ended)."""
        ...

    def stop_job(self, message: str) -> None:
        """Stop the job: the API refused it as a whole."""
        ...

    def pause_job(self, message: str) -> None:
        """Pause the job (its budget is reached)."""
        ...


class Recorder:
    """Buffers attempts and results for the sink and renews the leases of lines in flight."""

    def __init__(
        self,
        sink: Sink,
        *,
        flush_size: int,
        flush_interval: float,
        lease_seconds: float,
        on_broken: Callable[[str], None],
        journal: Journal | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.observer = observer
        self._flush_size, self._flush_interval = flush_size, flush_interval
        self._lease_seconds = lease_seconds
        self._on_broken = on_broken  # told when the store cannot be written: start no more calls
        self._attempts: list[AttemptRecord] = []
        self._results: list[LineResult] = []
        self._active: set[int] = set()
        self._flush_now = asyncio.Event()
        self._written = asyncio.Event()
        self._backlog = max(MIN_BACKLOG, BACKLOG_FLUSHES * flush_size)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    def sending(
        self, call_id: str, items: Sequence[WorkItem], attempts: Sequence[int], started_at: datetime
    ) -> None:
        """A call is about to leave: journal which lines it carries."""
        if self.observer is not None:
            self.observer.sending(call_id, items)
        if self.journal is not None:
            lines = [(item.request_id, n) for item, n in zip(items, attempts, strict=True)]
            self.journal.sent(call_id, items[0].job_id, lines, started_at)

    def record(self, attempt: AttemptRecord) -> None:
        """Buffer one attempt."""
        self.land([attempt], [])

    def finish(self, result: LineResult) -> None:
        """Buffer one line's terminal result."""
        self.land([], [result])

    def land(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        """Buffer one call's attempts and terminal results: one journal entry for the whole call."""
        if self.observer is not None:
            for attempt in attempts:
                self.observer.recorded(attempt)
            for result in results:
                self.observer.finished(result)
        if self.journal is not None:
            self.journal.landed(attempts, results)
        self._attempts.extend(attempts)
        self._results.extend(results)
        self._maybe_flush()

    def retrying(self, endpoint: str, model: str) -> None:
        """A unit's lines will be called again (for the metrics)."""
        if self.observer is not None:
            self.observer.retrying(endpoint, model)

    def paced(self, views: dict[str, PaceView], concurrency: int) -> None:
        """The limiter's paces and the concurrency, as the control loop just read them (metrics)."""
        if self.observer is not None:
            self.observer.paced(views, concurrency)

    def holding(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> AsyncIterable[WorkItem]:
        """The lines of ``items``, each held from the moment it is claimed, not only while its
        call runs: a chunk of 64 packs claims 16,384 lines at once, and those waiting their turn
        past the lease would be taken back by the sweeper and called by another worker too."""
        if isinstance(items, AsyncIterable):
            return self._hold_each(items)
        claimed = list(items)
        self.hold(item.request_id for item in claimed)
        return self._paced(claimed)

    async def _hold_each(self, items: AsyncIterable[WorkItem]) -> AsyncIterator[WorkItem]:
        async for item in items:
            self._active.add(item.request_id)
            if self.waiting >= self._backlog:  # the test of ``room`` without a coroutine a line
                await self.room()
            yield item

    async def _paced(self, items: list[WorkItem]) -> AsyncIterator[WorkItem]:
        for item in items:
            if self.waiting >= self._backlog:
                await self.room()
            yield item

    @property
    def waiting(self) -> int:
        """Records buffered and not yet handed to the store."""
        return len(self._attempts) + len(self._results)

    async def room(self) -> None:
        """Wait while the backlog is full and the writer alive (no wait outside ``async with``)."""
        while self.waiting >= self._backlog and self._tasks and not self._tasks[0].done():
            self._written.clear()
            self._flush_now.set()
            await self._written.wait()

    def hold(self, request_ids: Iterable[int]) -> None:
        """These lines are running: keep their leases."""
        self._active.update(request_ids)

    def let_go(self, request_ids: Iterable[int]) -> None:
        """These lines no longer run here: stop renewing their leases."""
        self._active.difference_update(request_ids)

    async def release(self, request_ids: Sequence[int]) -> None:
        """Give lines back to the store, for another executor or a later run."""
        await asyncio.to_thread(self.sink.release, list(request_ids))

    async def __aenter__(self) -> Recorder:
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._renewer())]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        writer, renewer = self._tasks
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
        self._closing = True
        self._flush_now.set()
        try:
            await writer  # the last flush; a store error surfaces here
        finally:
            if self.journal is not None:
                self.journal.close()  # kept on disk, for replay, unless the store has it all

    def _maybe_flush(self) -> None:
        if self.waiting >= self._flush_size:
            self._flush_now.set()

    async def _flush(self) -> None:
        attempts, results = self._attempts, self._results
        if not attempts and not results:
            return
        self._attempts, self._results = [], []
        upto = self.journal.seq if self.journal is not None else 0
        await asyncio.to_thread(self.sink.write, attempts, results)
        if self.journal is not None:
            self.journal.stored(upto)

    async def _writer(self) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), self._flush_interval)
                self._flush_now.clear()
                await self._flush()
                self._written.set()
            await self._flush()
        except Exception:
            # Calls whose results cannot be stored would be paid for and lost: stop starting them.
            self._on_broken(STORE_BROKEN)
            raise
        finally:
            self._written.set()  # nobody waits on a writer that has stopped

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if self._active:
                until = time.time() + self._lease_seconds
                await asyncio.to_thread(self.sink.renew, sorted(self._active), until)
