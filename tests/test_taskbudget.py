"""A budget over task lines: tasks already charged are polled to their end, only new submits wait,
and tasks going in other executors' hands count against it."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from sqlmodel import select

from jobs import store as q
from jobs.db import Store
from jobs.models import Task
from tests.helpers import all_lines, batch_line
from tests.taskfake import FakeRelay
from tests.test_taskengine import by_id, engine_for, ingest, run


def prices(tmp_path: Path) -> tuple[str, ...]:
    path = tmp_path / "prices.toml"
    path.write_text('[models."mj_imagine"]\nper_call = 0.1\n')
    return (str(path),)


def test_a_refund_frees_room_for_a_waiting_submit(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    rows = [batch_line("c0", "/mj/submit/imagine", {"prompt": "this fails"})]
    rows += [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(1, 4)]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay, budget=Decimal("0.25"), prices=prices(tmp_path)))
    lines = by_id(store)
    # c0 and c1 went; c2 waited until c0's refund, c3 until nothing was going: then the job paused.
    assert sorted(s["prompt"] for s in relay.submits) == ["cat 1", "cat 2", "this fails"]  # sent concurrently
    assert {c: lines[c].state for c in lines} == {
        "c0": "failed", "c1": "succeeded", "c2": "succeeded", "c3": "pending",
    }  # fmt: skip
    assert relay.billed == Decimal("0.2")
    with store.session() as session:
        job = q.get_job(session, job_id)
    assert job.status == "paused" and "budget reached" in (job.last_error or "")


def test_tasks_going_in_another_pass_count_against_the_budget(store: Store, tmp_path: Path) -> None:
    """Two worker passes over two messages of one job: the second sees the first's tasks going."""
    relay = FakeRelay()
    rows = [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(6)]
    job_id = ingest(store, tmp_path, rows)
    ids = [line.id or 0 for line in all_lines(store)]
    for part in (ids[:3], ids[3:]):
        engine = engine_for(store, job_id, relay, budget=Decimal("0.35"), prices=prices(tmp_path))
        object.__setattr__(engine.config, "poll_interval", 15.0)
        with store.session() as session:
            items = q.claim_lines(session, job_id=job_id, owner=engine.config.owner, lease_seconds=60,
                                  request_ids=part)  # fmt: skip
        due = asyncio.run(engine.step(items))
        assert sorted(due) == sorted(part)  # given back to wait: the job is not paused
    assert len(relay.submits) == 3  # not 6: the second pass counted the first pass's three
    with store.session() as session:
        assert len(session.exec(select(Task)).all()) == 3
        assert q.get_job(session, job_id).status == "running"
