"""Pause, cancel and a spent budget stop the spending on every worker, lines queued behind the
rate limiter included: real Celery workers, the stand-in relay counting the calls it gets.

No timing is asserted: after the control, the test waits until no line is held by any executor
(the control took effect everywhere), then checks that the relay got no call after that, and that
the calls between the control and that moment stay within what was in flight or already granted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.models import JobStatus
from tests.cluster import Cluster, workers_on
from tests.helpers import batch_line, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
KEY = "sk-canary-control-0123456789abcd"
RPM = 240  # 4 calls/s for all workers: hundreds of lines wait behind the limiter in each chunk
# Calls that may still go out between the control and its effect: those in flight (one or two at
# this pace) and those granted during one control interval plus a slow poll, 3 s at most at 4/s.
ALLOWED_AFTER_CONTROL = 2 + 3 * RPM // 60


@pytest.fixture
def relay() -> Iterator[RelayServer]:
    with RelayServer(RelayConfig(api_key=KEY, latency=0.2)) as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, relay: RelayServer, redis_url: str, pg_url: str) -> Iterator[Cluster]:
    with workers_on(tmp_path, relay_url=relay.url, key=KEY, db_url=pg_url, broker_url=redis_url) as c:
        yield c


def _wait(predicate: Callable[[], bool], what: str, cluster: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{cluster.tail_logs()}"
        time.sleep(0.1)


def _start(cluster: Cluster, tmp_path: Path, rows: list[dict[str, Any]], options: dict[str, Any]) -> int:
    cluster.start_worker("a")
    cluster.start_worker("b")
    time.sleep(3)  # both workers up before the first message
    return cluster.submit(write_jsonl(tmp_path / "in.jsonl", rows), options=options)


def _stops(cluster: Cluster, relay: RelayServer, job_id: int, at_control: int) -> None:
    _wait(lambda: cluster.counts(job_id)["running"] == 0, "executors still hold lines", cluster)
    after_effect = relay.stats()["calls"]
    time.sleep(2)
    assert relay.stats()["calls"] == after_effect, "calls went on after every executor let go"
    assert after_effect - at_control <= ALLOWED_AFTER_CONTROL
    assert cluster.counts(job_id)["pending"] + cluster.counts(job_id)["cancelled"] > 0  # stopped early


def _embeddings(n: int) -> list[dict[str, Any]]:
    return [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"}) for i in range(n)]


@pytest.mark.parametrize("control", ["pause", "cancel"])
def test_pause_and_cancel_stop_new_calls_on_every_worker(
    control: str, cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    job_id = _start(cluster, tmp_path, _embeddings(1500), {"pack": False, "rpm": RPM})
    _wait(lambda: relay.stats()["calls"] >= 12, "the job never got going", cluster)
    with cluster.store.session() as session:
        if control == "pause":
            q.set_status(session, job_id, JobStatus.PAUSED, allowed=(JobStatus.RUNNING,))
        else:
            q.cancel_job(session, job_id)
    _stops(cluster, relay, job_id, relay.stats()["calls"])
    if control == "cancel":
        counts = cluster.counts(job_id)
        assert counts["pending"] == 0 and counts["cancelled"] > 0  # every line ended


def test_a_spent_budget_stops_every_worker(cluster: Cluster, relay: RelayServer, tmp_path: Path) -> None:
    chat = {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat | {"user": str(i)}) for i in range(1500)]
    # Each call reserves about 1000 × $0.60/1M = $0.0006: the budget allows some thirty calls.
    job_id = _start(cluster, tmp_path, rows, {"rpm": RPM, "budget": "0.02"})

    def paused() -> bool:
        with cluster.store.session() as session:
            return q.get_job(session, job_id).status == JobStatus.PAUSED

    _wait(paused, "the budget never paused the job", cluster)
    at_control = relay.stats()["calls"]
    _stops(cluster, relay, job_id, at_control)
    with cluster.store.session() as session:
        assert "budget reached" in (q.get_job(session, job_id).last_error or "")
