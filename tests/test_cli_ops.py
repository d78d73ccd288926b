"""``batcher worker`` as a real process: unique node names, --hostname, logs with time and job."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batcher.cli.ops import worker_argv
from batcher.devrelay import RelayConfig
from jobs.settings import load_settings
from tests.cluster import ROOT, Cluster, relay_cluster
from tests.helpers import batch_line, write_jsonl
from workers.app import make_app

KEY = "sk-canary-ops-0123456789abcdef"


def test_worker_argv_names_the_node_by_pid_unless_told() -> None:
    argv = worker_argv(processes=3, hostname=None, queues="chat, embeddings", loglevel="INFO")
    assert argv[:3] == ["worker", "--concurrency=3", f"--hostname=batcher{__import__('os').getpid()}@%h"]
    assert argv[-2:] == ["-Q", "batcher.chat,batcher.embeddings"]
    assert "--hostname=gpu1@%h" in worker_argv(processes=1, hostname="gpu1@%h", queues=None, loglevel="INFO")


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[Cluster]:
    with relay_cluster(
        tmp_path, RelayConfig(api_key=KEY, latency=0.01), broker_url=redis_url, db_url=pg_url
    ) as (c, _):
        yield c


def _start(cluster: Cluster, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = cluster.tmp / f"worker-{name}.log"
    command = [sys.executable, "-m", "batcher", "worker", "--processes", "1", *args]
    with log.open("ab") as handle:
        proc = subprocess.Popen(command, env=cluster.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    cluster.workers[name], cluster.logs[name] = proc, log
    return proc


def _nodes(cluster: Cluster, expected: int, timeout: float = 60.0) -> set[str]:
    app = make_app(load_settings(broker_url=cluster.broker_url))
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while time.monotonic() < deadline:
        found = {name for reply in app.control.ping(timeout=1.0) for name in reply}
        if len(found) >= expected:
            break
    app.close()
    return found


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_two_workers_on_one_host_have_their_own_node_names(cluster: Cluster, tmp_path: Path) -> None:
    first = _start(cluster, "a")
    second = _start(cluster, "b")
    named = _start(cluster, "c", "--hostname", "gpu1@%h")
    host = socket.gethostname()
    nodes = _nodes(cluster, 3)
    assert nodes == {f"batcher{first.pid}@{host}", f"batcher{second.pid}@{host}", f"gpu1@{host}"}, (
        cluster.tail_logs()
    )
    rows = [
        batch_line(
            f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        for i in range(4)
    ]
    job_id = cluster.submit(write_jsonl(tmp_path / "in.jsonl", rows))
    cluster.wait_done(job_id)
    for proc in (first, second, named):
        proc.send_signal(signal.SIGTERM)
    for proc in (first, second, named):
        proc.wait(timeout=60)  # a warm shutdown: the task logs its summary before the worker exits
    logs = "\n".join(path.read_text(errors="replace") for path in cluster.logs.values())
    assert "DuplicateNodenameWarning" not in logs
    stamp = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO/ForkPoolWorker-\d+\] "
    assert re.search(stamp + rf"job {job_id}: running \d+ lines$", logs, re.M), logs
    assert re.search(stamp + rf"job {job_id}: \d+ succeeded, 0 failed, 0 given back; \d+ calls$", logs, re.M)
