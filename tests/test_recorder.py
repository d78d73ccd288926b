"""The recorder: attempts and results reach the sink in batches, leases of held lines are renewed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from jobs.endpoints import Endpoint
from jobs.records import AttemptRecord, LineResult, WorkItem
from workers.recorder import MIN_BACKLOG, STORE_BROKEN, Recorder


class ListSink:
    """A sink that keeps what it is given (the store is the I/O boundary of the recorder)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.writes: list[tuple[list[AttemptRecord], list[LineResult]]] = []
        self.renewed: list[list[int]] = []
        self.released: list[list[int]] = []
        self.renewed_once = asyncio.Event()
        self.fail = fail

    def write(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        if self.fail:
            raise RuntimeError("disk full")
        self.writes.append((list(attempts), list(results)))

    def renew(self, request_ids: Sequence[int], until: float) -> None:
        self.renewed.append(list(request_ids))
        self.renewed_once.set()

    def release(self, request_ids: Sequence[int]) -> None:
        self.released.append(list(request_ids))

    def halt_reason(self) -> str | None:
        return None

    def report_in_flight(self, calls: int | None) -> None:
        pass

    def stop_job(self, message: str) -> None:
        raise AssertionError("the recorder never stops a job")

    def pause_job(self, message: str) -> None:
        raise AssertionError("the recorder never pauses a job")


def attempt(request_id: int) -> AttemptRecord:
    return AttemptRecord(request_id, 1, 1, datetime(2025, 1, 1, tzinfo=UTC), 5, 200, "ok", "ok")


def result(request_id: int) -> LineResult:
    return LineResult(request_id, 1, "succeeded")


def recorder(sink: ListSink, broken: list[str], **kw: float) -> Recorder:
    settings = {"flush_size": 200, "flush_interval": 60.0, "lease_seconds": 300.0} | kw
    return Recorder(sink, on_broken=broken.append, **settings)  # type: ignore[arg-type]


async def test_leaving_writes_every_buffered_record_in_one_batch() -> None:
    sink, broken = ListSink(), []
    async with recorder(sink, broken) as r:
        r.record(attempt(1))
        r.finish(result(1))
        r.record(attempt(2))
    assert sink.writes == [([attempt(1), attempt(2)], [result(1)])]
    assert broken == []


async def test_a_full_buffer_is_written_before_the_end() -> None:
    sink, broken = ListSink(), []
    async with recorder(sink, broken, flush_size=2) as r:
        r.record(attempt(1))
        r.finish(result(1))
        while not sink.writes:
            await asyncio.sleep(0.01)
        assert sink.writes == [([attempt(1)], [result(1)])]
        r.record(attempt(2))
    assert sink.writes[-1] == ([attempt(2)], [])


async def test_a_store_that_cannot_be_written_halts_the_run_and_raises() -> None:
    sink, broken = ListSink(fail=True), []
    with pytest.raises(RuntimeError, match="disk full"):
        async with recorder(sink, broken) as r:
            r.finish(result(1))
    assert broken == [STORE_BROKEN]


async def test_held_lines_are_renewed_and_let_go_ones_are_not() -> None:
    sink, broken = ListSink(), []
    async with recorder(sink, broken, lease_seconds=0.03) as r:
        r.hold([3, 1, 2])
        r.let_go([2])
        await sink.renewed_once.wait()
    assert sink.renewed[0] == [1, 3]


async def test_release_gives_lines_back_at_once() -> None:
    sink, broken = ListSink(), []
    async with recorder(sink, broken) as r:
        await r.release([4, 5])
        assert sink.released == [[4, 5]]


def work_item(request_id: int) -> WorkItem:
    return WorkItem(request_id, 1, f"c{request_id}", Endpoint("/v1/embeddings"), "m", "{}", 0, 1)


@pytest.mark.parametrize("source", ["list", "async"])
async def test_claimed_lines_are_renewed_before_their_call_starts(source: str) -> None:
    """A chunk's lines waiting their turn keep their leases (the sweeper would take them back)."""
    sink = ListSink()
    items = [work_item(i) for i in (1, 2, 3)]

    async def claimed() -> AsyncIterator[WorkItem]:
        for item in items:
            yield item

    recorder = Recorder(sink, flush_size=100, flush_interval=60, lease_seconds=0.03, on_broken=print)
    async with recorder:
        held = recorder.holding(items if source == "list" else claimed())
        first = await anext(aiter(held))  # one line taken, two still waiting in the source
        if source == "async":
            async for _ in held:
                pass
        await asyncio.wait_for(sink.renewed_once.wait(), 30)  # a renewal of nothing never comes
    assert first.request_id == 1
    assert sink.renewed[0] == [1, 2, 3]


class SlowSink(ListSink):
    """A store that takes its time: each write waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def write(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        self.entered.set()
        self.go_on.wait(30)
        super().write(attempts, results)


@pytest.mark.parametrize("source", ["list", "async"])
async def test_intake_stops_while_the_store_lags_and_resumes_when_it_catches_up(source: str) -> None:
    """A store slower than the calls: claimed lines wait instead of results piling up in memory."""
    sink, broken = SlowSink(), []
    n = 3 * MIN_BACKLOG
    items = [work_item(i) for i in range(1, n + 1)]

    async def claimed() -> AsyncIterator[WorkItem]:
        for item in items:
            yield item

    taken: list[int] = []
    async with recorder(sink, broken, flush_size=10) as r:

        async def run() -> None:
            async for item in r.holding(items if source == "list" else claimed()):
                taken.append(item.request_id)
                r.finish(result(item.request_id))
                await asyncio.sleep(0)

        runner = asyncio.create_task(run())
        await asyncio.to_thread(sink.entered.wait, 30)  # the first batch is being written
        for _ in range(5 * n):
            await asyncio.sleep(0)  # every chance to run ahead of the store
        assert MIN_BACKLOG <= len(taken) < n  # stopped at the backlog, not at the end of the job
        assert r.waiting <= MIN_BACKLOG
        sink.go_on.set()
        await asyncio.wait_for(runner, 30)
    assert len(taken) == n
    assert sorted(x.request_id for _, results in sink.writes for x in results) == list(range(1, n + 1))
    assert broken == []


async def test_a_broken_store_never_leaves_intake_waiting() -> None:
    sink, broken = ListSink(fail=True), []
    items = [work_item(i) for i in range(1, 2 * MIN_BACKLOG + 1)]
    r = recorder(sink, broken, flush_size=10)
    taken = 0
    with pytest.raises(RuntimeError, match="disk full"):
        async with r:
            async for item in r.holding(items):
                taken += 1
                r.finish(result(item.request_id))
                await asyncio.sleep(0)
    assert taken == len(items)
    assert broken == [STORE_BROKEN]
