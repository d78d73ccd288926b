"""kill -9 of a real process at the two moments a task could be lost or paid twice.

- Between a submit and the task's first poll: the task id is durable, no poll has been recorded,
  and the process holding the line dies (an embedded ``run-job``, a Celery pool child). After the
  resume every line ends in one terminal result, no submit is repeated (the stand-in relay's own
  count per request body), the files match and usage equals the relay's billing.
- During a Midjourney modal step (``/mj/submit/modal``, a second charged submit): its mark is
  durable before it goes; the resume never sends it again, and ``retry --unknown`` sends it only
  if the task shows it never went.

A slow submit (the stand-in relay's ``submit_timeout``: charged, its answer held past the client's
timeout) holds the killed process where the test wants it; the test watches the store, then kills
only the PID it started (or that process's own pool child).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from batcher.devrelay import RelayServer
from batcher.devrelay.answers import body_key
from batcher.export import export_job
from batcher.usage import usage_report
from jobs.db import Store
from jobs.models import Request, Task
from tests.cluster import Cluster, wait_for_children
from tests.helpers import all_lines, batch_line, invoke, write_jsonl
from tests.test_integration_tasks import EXPECTED, check_run, cluster, task_relay, task_rows
from workers.prices import parse_prices

__all__ = ["cluster", "task_relay"]  # the fixtures, shared with the mixed-file tests
FLAGS = ("--poll-interval", "0.5", "--timeout", "10")
_LOCAL_FILES = {"a.png", "b.png"}  # task_rows' files: a body naming one is made at call time


def made_at_call_time(body: Any) -> bool:
    """A body that names a local file (read into it when sent) or follows another line (``after``):
    the relay sees a different body from the line's, so its count is not kept by this body."""
    if isinstance(body, dict):
        return "after" in body or any(made_at_call_time(v) for v in body.values())
    if isinstance(body, list):
        return any(made_at_call_time(v) for v in body)
    return body in _LOCAL_FILES


def tasks(store: Store) -> dict[str, Task]:
    """The task rows by line custom_id."""
    with store.session() as session:
        rows = session.exec(
            select(Task, Request.custom_id).join(Request, Request.id == Task.request_id)
        ).all()
    return {custom_id: task for task, custom_id in rows}


def unpolled(store: Store) -> set[str]:
    """Lines whose task id is durable and whose task has not been polled yet."""
    return {
        cid for cid, t in tasks(store).items() if t.relay_task_id and t.polls == 0 and t.state == "submitted"
    }


def all_states(store: Store) -> dict[str, str]:
    return {line.custom_id: line.state for line in all_lines(store)}


def wait_for(what: Callable[[], bool], proc: subprocess.Popen[bytes], message: str) -> None:
    deadline = time.monotonic() + 120
    while not what():
        assert proc.poll() is None and time.monotonic() < deadline, message
        time.sleep(0.02)


def check_sent_once(store: Store, relay: RelayServer, rows: list[dict[str, Any]]) -> None:
    """The relay received each line's submit at most once (a refusal for now, ``busy``, once more);
    a line the kill cut before its submit reached the relay ended unknown, sent never."""
    per_body, known = relay.stats()["per_key"], {cid for cid, t in tasks(store).items() if t.relay_task_id}
    for row in rows:
        body, cid = row["body"], row["custom_id"]
        if not made_at_call_time(body):
            times, most = per_body.get(body_key(body), 0), 2 if cid == "busy" else 1
            assert (1 if cid in known else 0) <= times <= most, (cid, times)


def start_run_job(*flags: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "batcher", "run-job", "1", *flags]
    return subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_run_job_killed_between_submit_and_first_poll_loses_no_task(
    env: str, db: Store, task_relay: RelayServer, tmp_path: Path
) -> None:
    rows = task_rows(tmp_path)
    assert (
        invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue", *FLAGS).exit_code == 0
    )
    proc = start_run_job()
    wait_for(lambda: len(unpolled(db)) >= 5, proc, "run-job ended before its tasks were submitted")
    at_kill = unpolled(db)
    proc.send_signal(signal.SIGKILL)  # the run-job this test started, by its PID
    proc.wait()
    assert at_kill <= unpolled(db)  # the killed process recorded no poll of those tasks
    assert invoke("run-job", "1", *FLAGS).exit_code == 3  # some lines fail, as they should
    out = tmp_path / "out.jsonl"
    export_job(db, 1, out)
    check_run(db, task_relay, out, rows, killed=True)
    assert {cid: all_states(db)[cid] for cid in at_kill} == {cid: EXPECTED[cid] for cid in at_kill}
    check_sent_once(db, task_relay, rows)


@pytest.mark.redis
@pytest.mark.postgres
def test_a_celery_pool_child_killed_between_submit_and_first_poll_loses_no_task(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    workers, relay = cluster
    rows = task_rows(tmp_path)
    job_id = workers.submit(
        write_jsonl(tmp_path / "in.jsonl", rows), options={"poll_interval": 0.5, "timeout": 10}
    )
    main = workers.start_worker("a")
    [child] = wait_for_children(main.pid)

    def held_by_child() -> bool:
        with workers.store.session() as session:
            owners = dict(session.exec(select(Request.custom_id, Request.lease_owner)).all())
        return any((owners.get(cid) or "").split(":")[1:2] == [str(child)] for cid in unpolled(workers.store))

    wait_for(held_by_child, main, "the worker's pool child never held a submitted, unpolled task")
    at_kill = unpolled(workers.store)
    os.kill(child, signal.SIGKILL)  # only the pool child of the worker this test started
    workers.wait_done(job_id, timeout=240)
    out = tmp_path / "out.jsonl"
    export_job(workers.store, job_id, out)
    check_run(workers.store, relay, out, rows, job_id, killed=True)
    states = all_states(workers.store)
    assert {cid: states[cid] for cid in at_kill} == {cid: EXPECTED[cid] for cid in at_kill}
    check_sent_once(workers.store, relay, rows)


# Vary (Region) whose modal step's answer is held past the timeout: the kill comes while it is sent.
REGION_HELD = {
    "after": "cat-u2",
    "button": "Vary (Region)",
    "maskBase64": "a.png",
    "modal": {"prompt": "a hat [[fault:submit_timeout]]"},
}


def test_run_job_killed_during_a_modal_step_never_sends_it_twice(
    env: str, db: Store, task_relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line("cat", "/mj/submit/imagine", {"prompt": "a red cat"}),
        batch_line("cat-u2", "/mj/submit/action", {"after": "cat", "button": "U2"}),
        batch_line("region", "/mj/submit/action", REGION_HELD),
    ]
    task_rows(tmp_path)  # writes a.png
    assert (
        invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue", *FLAGS).exit_code == 0
    )
    proc = start_run_job()

    def step_in_flight() -> bool:  # marked in the store, taken by the relay, its answer held
        billing = task_relay.stats()["tasks"]["billing"]["per_model"]
        return "mj_modal" in billing and getattr(tasks(db).get("region"), "modal", None) == "submitting"

    wait_for(step_in_flight, proc, "the modal step was never in flight")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert invoke("run-job", "1", *FLAGS).exit_code == 3
    region = next(line for line in all_lines(db) if line.custom_id == "region")
    assert (region.state, region.error_code) == ("failed", "submit_unknown")
    assert invoke("retry", "--unknown", "1").exit_code == 0
    assert invoke("run-job", "1", *FLAGS).exit_code == 0
    assert {line.custom_id: line.state for line in all_lines(db)} == dict.fromkeys(
        ("cat", "cat-u2", "region"), "succeeded"
    )
    assert task_relay.stats()["tasks"]["billing"]["per_model"]["mj_modal"]["charges"] == 1  # never sent again
    assert tasks(db)["region"].modal == "taken"
    check_confirmed_cost(db, task_relay)


def check_confirmed_cost(db: Store, relay: RelayServer) -> None:
    """Usage's confirmed cost equals the relay's net billing (the step counted once, as mj_modal)."""
    pricing = httpx.get(relay.url.removesuffix("/v1") + "/api/pricing").json()
    book = parse_prices(json.loads(json.dumps(pricing), parse_float=Decimal), source="relay")
    report = usage_report(db, [1], prices=book)
    assert report.total.cost == Decimal(relay.stats()["tasks"]["billing"]["net_usd"]) > 0
