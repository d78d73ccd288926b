"""Cancel: every line ends terminal (cancelled lines exported with the reason), the job is finished."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.db import Store
from tests.helpers import RELAY_KEY, batch_line, invoke, read_jsonl, write_jsonl


def _rows(n: int) -> list[dict[str, object]]:
    return [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"}) for i in range(n)]


def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_cancel_mid_run_ends_every_line_and_the_export_is_whole(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.2))
    out = tmp_path / "out.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", _rows(200))
    command = [sys.executable, "-m", "batcher", "run", str(source), "-o", str(out), "--no-pack"]
    proc = subprocess.Popen([*command, "--max-in-flight", "4"], env=os.environ.copy(), stderr=subprocess.PIPE)

    def some_done() -> bool:
        with db.session() as s:
            return q.state_counts(s, 1)["succeeded"] >= 8

    _wait_for(some_done)
    assert "lines will not run" in invoke("cancel", "1").stdout
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"job 1 was cancelled:" in stderr and b"resume" not in stderr
    with db.session() as s:
        counts = q.state_counts(s, 1)
        assert counts["pending"] == counts["running"] == counts["failed"] == 0
        assert counts["succeeded"] + counts["cancelled"] == 200 and counts["cancelled"] > 0
        assert q.get_job(s, 1).status == "cancelled"
    exported = read_jsonl(out)
    assert len(exported) == 200  # the run's own export: nothing left out
    cancelled = [r for r in exported if r["error"] is not None]
    assert {r["error"]["code"] for r in cancelled} == {"cancelled"}
    assert len(cancelled) == counts["cancelled"]
    again = invoke("export", "1", "-o", str(tmp_path / "again.jsonl"))
    assert "not finished" not in again.stderr
    assert invoke("status", "1", "--json").exit_code == 0


def test_cancel_takes_lines_of_a_dead_run_too(env: str, db: Store, tmp_path: Path) -> None:
    """Lines leased by a run that died (its lease ran out) are cancelled, not left running."""
    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", _rows(3))), "--no-queue").exit_code == 0
    with db.session() as s:
        q.start_job(s, 1)
        q.claim_lines(s, job_id=1, owner="dead:1", lease_seconds=-1, limit=2)
    invoke("cancel", "1")
    with db.session() as s:
        assert q.state_counts(s, 1)["cancelled"] == 3


def test_lines_given_back_after_cancel_become_cancelled(env: str, db: Store, tmp_path: Path) -> None:
    """An executor that gives back its lines after the cancel (it stops) leaves none pending."""
    from workers.sink import StoreSink

    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", _rows(3))), "--no-queue").exit_code == 0
    with db.session() as s:
        q.start_job(s, 1)
        items = q.claim_lines(s, job_id=1, owner="live:1", lease_seconds=300, limit=2)
    invoke("cancel", "1")
    with db.session() as s:
        assert q.state_counts(s, 1)["running"] == 2  # still leased: a call may be in flight
    StoreSink(db, job_id=1, owner="live:1").release([item.request_id for item in items])
    with db.session() as s:
        counts = q.state_counts(s, 1)
    assert (counts["cancelled"], counts["pending"], counts["running"]) == (3, 0, 0)
