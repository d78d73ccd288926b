"""When a chunk's task returns: its unsent lines within the lead of going, its last calls drained
in the background, its summary once they end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.ingest import IngestOptions, ingest_file
from jobs import store as q
from jobs.db import Store
from jobs.settings import load_settings
from tests.helpers import RELAY_KEY, batch_line, write_jsonl
from workers.chunk import run_chunk
from workers.handover import EndRate, handed_over, ready
from workers.leases import new_owner, owner_is_dead
from workers.runtime import WorkerRuntime
from workers.stats import Stats


@pytest.mark.parametrize(
    ("left", "rate", "expected"),
    [
        (0, 0.0, True),  # every line sent: nothing left to wait for
        (-1, 0.0, True),
        (5, 0.0, False),  # no rate yet: not before the lines are all sent
        (49, 50.0, True),  # under a second's worth at 50 lines/s
        (50, 50.0, True),
        (51, 50.0, False),
        (400, 50.0, False),
    ],
)
def test_ready_when_the_unsent_lines_go_within_the_lead(left: int, rate: float, expected: bool) -> None:
    assert ready(left=left, rate=rate, lead=1.0) is expected


def test_end_rate_counts_over_about_the_last_window() -> None:
    rate = EndRate(now=0.0, window=1.0)
    assert rate.add(0.5, 25) == 50.0
    assert rate.add(1.0, 50) == 50.0
    assert rate.add(2.0, 150) == pytest.approx(100.0)  # the first second's samples dropped
    assert rate.add(2.0, 150) == pytest.approx(100.0)


async def test_handed_over_waits_for_the_unsent_lines_not_for_the_last_calls() -> None:
    stats, clock = Stats(), [0.0]
    run: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()

    async def lines_go() -> None:
        while stats.succeeded < 300:  # 10 lines a tick of 0.1 s: 100 lines/s
            await asyncio.sleep(0)
            clock[0] += 0.1
            stats.succeeded += 10
        run.set_result(stats)

    going = asyncio.ensure_future(lines_go())
    await handed_over(run, stats, 300, clock=lambda: clock[0], sample=0)
    assert not run.done()
    assert 200 <= stats.ended < 300  # about a second's worth of lines left
    await going


async def test_handed_over_returns_when_the_run_ends_first() -> None:
    run: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
    run.set_result(Stats())
    await handed_over(run, Stats(), 10, sample=0)  # 10 lines never sent: the run ended anyway


@pytest.mark.redis
@pytest.mark.slow
def test_a_chunk_returns_while_its_last_call_drains_and_reports_at_its_end(
    db: Store, relay: RelayServer, redis_url: str, tmp_path: Path
) -> None:
    # The slow call is held until the test releases it: the nine others end first however loaded
    # the machine is.
    relay.set_config(RelayConfig(api_key=RELAY_KEY, hang_seconds=120))
    body = {"model": "m", "messages": [{"role": "user", "content": "slow [[fault:hangx1]]"}]}
    rows = [batch_line("slow", "/v1/chat/completions", body)]
    rows += [
        batch_line(
            f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": f"{i}"}]}
        )
        for i in range(9)
    ]
    ingest_file(db, write_jsonl(tmp_path / "in.jsonl", rows), IngestOptions())
    with db.session() as session:
        q.start_job(session, 1)
    runtime, ended, owner = WorkerRuntime(redis_url), list[Stats](), new_owner()
    try:
        so_far = run_chunk(
            db, load_settings(), 1, list(range(1, 11)), runtime=runtime, owner=owner, on_end=ended.append
        )
        assert so_far.ended < 10 <= so_far.ended + so_far.lines_in_flight  # every line sent, one slow
        assert ended == []  # the slow call drains after the task
        assert not owner_is_dead(owner)  # the sweeper of this process leaves its line alone
        relay.release_hangs()
        assert runtime.drain(30) == 0
        with db.session() as session:
            assert q.state_counts(session, 1)["succeeded"] == 10
        assert [(s.succeeded, s.calls) for s in ended] == [(10, 10)]
        assert owner_is_dead(owner)
    finally:
        runtime.drain(30)
        runtime.close()
