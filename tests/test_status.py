"""`batcher status`: calls in flight are calls (not leased lines); `--watch` redraws in place on a
terminal and writes one plain line per refresh through a pipe."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.db import Store
from tests.helpers import RELAY_KEY, batch_line, invoke, write_jsonl

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def test_calls_in_flight_sum_fresh_reports_only(db: Store) -> None:
    with db.session() as session:
        q.report_in_flight(session, owner="a", job_id=1, calls=3, now=100.0)
        q.report_in_flight(session, owner="b", job_id=1, calls=4, now=100.0)
        q.report_in_flight(session, owner="a", job_id=1, calls=2, now=101.0)  # a's newer report
        q.report_in_flight(session, owner="dead", job_id=1, calls=50, now=90.0)  # long gone
        q.report_in_flight(session, owner="c", job_id=2, calls=9, now=101.0)
        assert q.calls_in_flight(session, 1, now=101.5) == 6
        q.forget_executor(session, "b")
        assert q.calls_in_flight(session, 1, now=101.5) == 2


def _running_job(tmp_path: Path, relay: RelayServer) -> subprocess.Popen[bytes]:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.3))
    rows = [batch_line(f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": str(i)}]})
            for i in range(40)]  # fmt: skip
    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue").exit_code == 0
    command = [sys.executable, "-m", "batcher", "run-job", "1", "--max-in-flight", "2"]
    return subprocess.Popen(command, env=os.environ.copy(), stderr=subprocess.DEVNULL)


def test_in_flight_counts_calls_not_leased_lines(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    run = _running_job(tmp_path, relay)
    seen: list[tuple[int, int]] = []
    while run.poll() is None:
        data = json.loads(invoke("status", "1", "--json").stdout)
        seen.append((data["calls_in_flight"], data["counts"]["running"]))
        time.sleep(0.1)
    assert run.returncode == 0
    assert max(calls for calls, _ in seen) >= 1
    assert all(calls <= 2 for calls, _ in seen)  # --max-in-flight 2, whatever is leased
    assert max(leased for _, leased in seen) > 2  # lines are leased ahead of their calls


def test_watch_through_a_pipe_writes_plain_lines(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    run = _running_job(tmp_path, relay)
    watch = subprocess.run(
        [sys.executable, "-m", "batcher", "status", "1", "--watch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    run.wait(timeout=60)
    assert watch.returncode == 0, watch.stderr
    assert "\x1b" not in watch.stdout
    plain = re.compile(r"^job 1 (queued|running|completed) · \d+/40 \d+% · failed 0 · .*in flight \d+$")
    ticks = [line for line in watch.stdout.splitlines() if plain.match(line)]
    assert len(ticks) >= 2, watch.stdout
    assert "job 1 (in.jsonl): completed, 40/40 done" in watch.stdout  # the whole status at the end
    assert watch.stdout.count("state      lines") == 1


def test_watch_on_a_terminal_redraws_in_place(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    run = _running_job(tmp_path, relay)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    watch = subprocess.Popen(
        [sys.executable, "-m", "batcher", "status", "1", "--watch"],
        stdin=slave, stdout=slave, stderr=slave, env=os.environ | {"TERM": "xterm"},
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert watch.wait(timeout=60) == 0
    run.wait(timeout=60)
    os.close(master)
    raw = b"".join(chunks).decode(errors="replace")
    draws = raw.count("job 1 (in.jsonl): ")
    ups = re.findall(r"\x1b\[\d*A", raw)  # the cursor goes back up over the block
    assert draws >= 2 and len(ups) >= draws - 1  # every refresh redraws the block in place
    assert "completed, 40/40 done" in raw
