"""The task engine's clock rules on a fake clock: poll spacing, deadlines, the modal step, worker passes."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import httpx
import orjson

from jobs import store as q
from jobs.db import Store
from tests.helpers import all_lines, batch_line
from tests.taskfake import FakeRelay
from tests.test_taskengine import answer, by_id, engine_for, ingest, run
from workers.taskchunk import schedule
from workers.taskengine import TaskEngine


class FakeClock:
    """A clock that a sleep moves forward."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)
        await asyncio.sleep(0)


def on_clock(engine: TaskEngine, clock: FakeClock, *, poll_interval: float) -> TaskEngine:
    object.__setattr__(engine.config, "poll_interval", poll_interval)
    object.__setattr__(engine.config, "control_interval", poll_interval)
    engine._clock = clock  # type: ignore[method-assign]
    engine._sleep = clock.sleep  # type: ignore[method-assign]
    return engine


class PollTimes(FakeRelay):
    """The fake relay, noting when each task id was polled."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.polled: dict[str, list[float]] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/list-by-condition"):
            for task_id in orjson.loads(request.content)["ids"]:
                self.polled.setdefault(task_id, []).append(self.clock.now)
        return super().handle(request)


def test_a_task_is_polled_no_sooner_than_the_interval(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    relay = PollTimes(clock)
    rows = [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(3)]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, on_clock(engine_for(store, job_id, relay), clock, poll_interval=15.0))
    assert all(line.state == "succeeded" for line in all_lines(store))
    for times in relay.polled.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 4 and min(gaps) >= 15.0


def test_a_task_still_going_past_the_deadline_fails_with_that_reason(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    job_id = ingest(store, tmp_path, [batch_line("s", "/mj/submit/imagine", {"prompt": "s"})])
    run(store, job_id, on_clock(engine_for(store, job_id, StuckRelay()), clock, poll_interval=15.0))
    line = all_lines(store)[0]
    assert line.error_code == "deadline" and "(1 h)" in (line.last_error or "")
    assert 3600 <= clock.now - 1_000_000.0 < 3600 + 16  # polled every 15 s until the hour was out


def test_a_modal_without_the_lines_modal_fields_fails_saying_what_to_add(
    store: Store, tmp_path: Path
) -> None:
    job_id = ingest(store, tmp_path, [batch_line("m", "/mj/submit/imagine", {"prompt": "a modal cat"})])
    run(store, job_id, engine_for(store, job_id, FakeRelay()))
    line = all_lines(store)[0]
    assert (
        line.state == "failed" and line.error_code == "modal_needed" and '"modal"' in (line.last_error or "")
    )


class StuckRelay(FakeRelay):
    """A relay whose MJ tasks stay in progress forever."""

    def _mj_view(self, task: Any) -> dict[str, Any]:
        return {"id": task.id, "status": "IN_PROGRESS", "progress": "10%", "failReason": ""}


def test_the_modal_step_follows_with_the_lines_modal_fields(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    rows = [
        batch_line(
            "m", "/mj-fast/mj/submit/imagine", {"prompt": "a modal cat", "modal": {"prompt": "zoom --zoom 2"}}
        )
    ]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay))
    modal = next(s for s in relay.submits if s["path"].endswith("/modal"))
    assert modal["path"] == "/mj-fast/mj/submit/modal" and modal["prompt"] == "zoom --zoom 2"
    line = by_id(store)["m"]
    assert line.state == "succeeded" and answer(line)["task_id"] != modal["taskId"]  # the modal's own task
    assert "modal" not in relay.submits[0]  # batcher's own field is never sent


def test_a_worker_pass_gives_lines_back_with_their_due_time(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    rows = [
        batch_line("c", "/mj/submit/imagine", {"prompt": "cat"}),
        batch_line("u", "/mj/submit/action", {"after": "c", "button": "U1"}),
    ]
    job_id = ingest(store, tmp_path, rows)
    engine = engine_for(store, job_id, relay)
    object.__setattr__(engine.config, "poll_interval", 15.0)
    with store.session() as session:
        items = q.claim_lines(session, job_id=job_id, owner=engine.config.owner, lease_seconds=60)
    due = asyncio.run(engine.step(items))
    assert len(relay.submits) == 1 and sorted(due) == sorted(line.id for line in all_lines(store))
    assert all(line.state == "pending" and line.claims == 0 for line in all_lines(store))
    sent: list[tuple[int, list[int], float, int]] = []
    schedule(store, job_id, due, lambda *args: sent.append(args))
    assert sorted(i for _, ids, _, _ in sent for i in ids) == sorted(due)
    assert all(0 <= countdown <= 16 for _, _, countdown, _ in sent)
    assert all(line.enqueued_at == math.ceil(due[line.id or 0]) for line in all_lines(store))
