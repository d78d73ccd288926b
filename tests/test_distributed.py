"""Distributed execution on real services: Celery worker subprocesses, the local Redis (broker
and shared limiter), the local PostgreSQL (store), and the stand-in relay over loopback.

Each test checks the promise that matters: exactly one terminal result per custom_id, whatever
dies or is lost, and the relay's limits kept by all workers together.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.answers import body_key, expected_embedding
from batcher.devrelay.enforce import LimitRules
from batcher.export import export_job
from jobs import store as q
from tests.cluster import Cluster, child_pids, wait_for_children, workers_on
from tests.helpers import all_attempts, batch_line, read_jsonl, write_jsonl
from tests.services import PostgresDatabase, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
KEY = "sk-canary-distributed-9f8e7d6c5b4a"


@pytest.fixture
def relay() -> Iterator[RelayServer]:
    with RelayServer(RelayConfig(api_key=KEY, latency=0.05)) as server:
        yield server


def make_cluster(tmp_path: Path, relay: RelayServer, broker_url: str, pg_url: str) -> Iterator[Cluster]:
    with workers_on(tmp_path, relay_url=relay.url, key=KEY, db_url=pg_url, broker_url=broker_url) as c:
        yield c


@pytest.fixture
def cluster(tmp_path: Path, relay: RelayServer, redis_url: str, pg_url: str) -> Iterator[Cluster]:
    """Workers on the session's own Redis."""
    yield from make_cluster(tmp_path, relay, redis_url, pg_url)


@pytest.fixture
def lossy_cluster(
    tmp_path: Path, relay: RelayServer, own_redis: RedisServer, pg_url: str
) -> Iterator[tuple[Cluster, RedisServer]]:
    """Workers on a Redis of this test alone, which the test kills and restarts."""
    for c in make_cluster(tmp_path, relay, own_redis.url, pg_url):
        yield c, own_redis


def embedding_rows(tmp: Path, n: int, *, name: str = "in.jsonl") -> tuple[Path, list[dict[str, Any]]]:
    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "emb", "input": f"text {i}"}) for i in range(n)]
    return write_jsonl(tmp / name, rows), rows


def assert_one_result_each(cluster: Cluster, job_id: int, rows: list[dict[str, Any]], tmp: Path) -> None:
    out = tmp / f"out-{job_id}.jsonl"
    summary = export_job(cluster.store, job_id, out)
    exported = read_jsonl(out)
    assert summary.unfinished == 0
    assert Counter(r["custom_id"] for r in exported) == Counter(r["custom_id"] for r in rows)
    for row, line in zip(exported, rows, strict=True):
        assert row["error"] is None, row
        assert row["response"]["body"]["data"][0]["embedding"] == expected_embedding(line["body"]["input"], 8)


def extra_calls(relay: RelayServer, rows: list[dict[str, Any]]) -> int:
    per_key = relay.stats()["per_key"]
    return sum(max(0, per_key.get(body_key(r["body"]), 0) - 1) for r in rows)


def test_two_workers_finish_a_job_with_one_result_per_line(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    path, rows = embedding_rows(tmp_path, 600)
    cluster.start_worker("a")
    cluster.start_worker("b")
    job_id = cluster.submit(path, options={"pack": False})
    cluster.wait_done(job_id)
    assert_one_result_each(cluster, job_id, rows, tmp_path)
    assert extra_calls(relay, rows) == 0
    workers = {a.worker.split(":")[1] for a in all_attempts(cluster.store) if a.worker}
    assert len(workers) >= 2  # both workers took part


def test_kill_9_workers_repeatedly_the_job_still_completes(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, latency=0.3))
    path, rows = embedding_rows(tmp_path, 1500)
    cluster.start_worker("a")
    cluster.start_worker("b")
    job_id = cluster.submit(path, options={"pack": False})
    in_flight_at_kills = 0
    for round_no in range(3):
        time.sleep(2.5)
        in_flight_at_kills += cluster.counts(job_id)["running"]
        cluster.kill("a")  # the main process, with its pool child's work in flight
        cluster.start_worker("a" if round_no < 2 else "c")
    time.sleep(2.0)
    pool_child = wait_for_children(cluster.workers["b"].pid)[0]
    in_flight_at_kills += cluster.counts(job_id)["running"]
    subprocess.run(["kill", "-9", str(pool_child)], check=True)  # one pool child only
    cluster.wait_done(job_id, timeout=180)
    assert_one_result_each(cluster, job_id, rows, tmp_path)
    assert extra_calls(relay, rows) <= in_flight_at_kills


@pytest.mark.parametrize("loss", ["restart", "flushall"])
def test_broker_losing_every_message_mid_job_still_completes(
    lossy_cluster: tuple[Cluster, RedisServer], relay: RelayServer, tmp_path: Path, loss: str
) -> None:
    cluster, broker = lossy_cluster
    relay.set_config(RelayConfig(api_key=KEY, latency=0.3))
    path, rows = embedding_rows(tmp_path, 1200)
    cluster.start_worker("a")
    time.sleep(3)
    job_id = cluster.submit(path, options={"pack": False, "concurrency": 40})
    time.sleep(2)
    assert cluster.counts(job_id)["pending"] > 0  # messages were still queued
    if loss == "restart":
        broker.restart()  # kill -9 of the broker: every message and key is gone
    else:
        broker.flush()
    cluster.wait_done(job_id, timeout=180)
    assert_one_result_each(cluster, job_id, rows, tmp_path)


def test_workers_share_one_rate_limit(cluster: Cluster, relay: RelayServer, tmp_path: Path) -> None:
    relay.set_config(RelayConfig(api_key=KEY, latency=0.05, rps_limit=100))
    path, rows = embedding_rows(tmp_path, 3000)
    cluster.start_worker("a")
    cluster.start_worker("b")
    time.sleep(3)  # both workers up before the first message
    job_id = cluster.submit(path, options={"rpm": 6000, "pack": False})
    cluster.wait_done(job_id, timeout=180)
    assert_one_result_each(cluster, job_id, rows, tmp_path)
    stats = relay.stats()
    # Shared: both workers paced at 98/s each would send twice the limit, half of it refused.
    # (How close to the limit they get is the benchmarks' business: a rate is no test's.)
    workers = {
        a.worker.split(":")[1] for a in all_attempts(cluster.store) if a.status_code == 200 and a.worker
    }
    assert len(workers) == 2
    assert stats["limits"]["busiest_window"] <= 100
    assert stats["rate_limited"] <= 0.02 * stats["calls"], stats["by_status"]


def test_workers_find_an_unknown_limit_together_and_fail_no_line(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    """No --rpm: both workers follow one pace in Redis, lowered by the relay's 429s; none fails a line."""
    relay.set_config(RelayConfig(api_key=KEY, latency=0.02, limits=LimitRules(requests=60, window=1.0)))
    path, rows = embedding_rows(tmp_path, 1100)  # three messages: both workers get some
    cluster.start_worker("a")
    cluster.start_worker("b")
    time.sleep(3)
    job_id = cluster.submit(path, options={"pack": False, "max_attempts": 1})
    cluster.wait_done(job_id, timeout=180)
    assert_one_result_each(cluster, job_id, rows, tmp_path)  # max_attempts 1, yet no 429 failed a line
    assert relay.stats()["rate_limited"] > 0
    workers = {
        a.worker.split(":")[1] for a in all_attempts(cluster.store) if a.status_code == 200 and a.worker
    }
    assert len(workers) >= 2
    client = cluster.redis()
    try:
        keys = client.keys("batcher:rl:*")
        assert len(keys) == 1  # one pace for (provider, model), whoever calls
        shared = float(client.hget(keys[0], "rate") or 0)
    finally:
        client.close()
    assert 0 < shared <= 60 * 1.2
    provider = keys[0].decode().removeprefix("batcher:rl:").split("|")[0]
    with cluster.store.session() as s:
        assert 0 < q.learned_paces(s, provider)["emb"] <= 60 * 1.2  # the next job starts from it


def test_429_storm_costs_one_call_per_retry_after_and_fails_no_line(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    path, rows = embedding_rows(tmp_path, 400)
    cluster.start_worker("a")
    cluster.start_worker("b")
    time.sleep(3)
    job_id = cluster.submit(path, options={"pack": False, "concurrency": 10})
    time.sleep(1.0)
    storm = RelayConfig(api_key=KEY, latency=0.05, fault_rate=1.0, faults=("429",), retry_after=1.0)
    before = relay.stats()["calls"]
    relay.set_config(storm)
    time.sleep(4.0)
    during = relay.stats()["calls"] - before
    relay.set_config(RelayConfig(api_key=KEY, latency=0.05))
    cluster.wait_done(job_id, timeout=120)
    assert_one_result_each(cluster, job_id, rows, tmp_path)
    # 4 s of storm with Retry-After 1 s: a probe a second, plus the calls in flight when it began
    # (2 workers x 10) and, at most once each, the call a slot sends before its first 429 lands.
    in_flight_allowance = 2 * 2 * 10
    assert during <= in_flight_allowance + 4 + 2, during
    with cluster.store.session() as s:
        calls_in_storm = (
            s.connection()
            .execute(sa.text("SELECT count(*) FROM attempt WHERE status_code = 429"))
            .scalar_one()
        )
    with cluster.store.session() as s:
        times = (
            s.connection()
            .execute(
                sa.text("SELECT started_at, worker FROM attempt WHERE status_code = 429 ORDER BY started_at")
            )
            .all()
        )
    assert calls_in_storm <= in_flight_allowance + 6, [(str(t), w[-12:]) for t, w in times]


def test_canary_key_appears_nowhere(
    cluster: Cluster, relay: RelayServer, tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    captured: list[str] = []
    monitor_client = cluster.redis()
    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            try:
                with monitor_client.monitor() as m:
                    for command in m.listen():
                        captured.append(str(command.get("command", "")))
                        if stop.is_set():
                            return
            except Exception:  # redis-py's MONITOR parser fails on some lines: listen again
                continue

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    path, _rows = embedding_rows(tmp_path, 100)
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [batch_line("x", "/v1/embeddings", {"model": "e", "input": "[[fault:400]]"})]
    )
    cluster.start_worker("a")
    job_id = cluster.submit(path)
    bad_id = cluster.submit(bad)
    cluster.wait_done(job_id)
    cluster.wait_done(bad_id)
    stop.set()
    cluster.redis().ping()  # wakes the monitor loop
    thread.join(timeout=5)
    assert captured  # the capture really saw the traffic
    assert not any(KEY in c for c in captured)
    r = cluster.redis()
    for key in r.scan_iter("*"):
        assert KEY.encode() not in key
        dumped = r.dump(key)  # None: the key went (a queue emptied, a mutex expired) since the scan
        assert dumped is None or KEY.encode() not in dumped
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", pg_database.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert KEY not in dump
    for log in cluster.logs.values():
        assert KEY not in log.read_text(errors="replace")
    out = tmp_path / "export.jsonl"
    export_job(cluster.store, bad_id, out)
    assert KEY not in out.read_text()
    assert "sk-canary" not in out.read_text()


def test_pickle_message_is_refused_and_runs_nothing(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    path, _rows = embedding_rows(tmp_path, 5)
    from batcher.ingest import IngestOptions, ingest_file

    job = ingest_file(cluster.store, path, IngestOptions()).job
    with cluster.store.session() as s:
        q.start_job(s, job.id or 0)
        ids = [ln.id for ln in q.iter_lines(s, job.id or 0)]
    from jobs.settings import load_settings
    from workers.app import make_app

    app = make_app(load_settings(broker_url=cluster.broker_url))
    app.send_task("batcher.run_lines", args=[job.id, ids], queue="batcher.embeddings", serializer="pickle")
    cluster.start_worker("a")
    deadline = time.monotonic() + 30
    log = cluster.logs["a"]
    while "pickle" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert "pickle" in log.read_text(errors="replace")
    assert relay.stats()["calls"] == 0
    assert cluster.counts(job.id or 0)["pending"] == 5


def test_poison_line_that_kills_its_worker_ends_failed(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    """Whenever the poison line is in flight, the process running it dies (kill -9 of the lease owner)."""
    rows = [batch_line("poison", "/v1/embeddings", {"model": "e", "input": "[[fault:hang]]"})]
    rows += [batch_line(f"ok{i}", "/v1/embeddings", {"model": "e", "input": f"fine {i}"}) for i in range(5)]
    relay.set_config(RelayConfig(api_key=KEY, hang_seconds=60))
    path = write_jsonl(tmp_path / "poison.jsonl", rows)
    cluster.start_worker("a")
    job_id = cluster.submit(path, options={"max_attempts": 3, "timeout": 120, "pack": False})
    killed: set[int] = set()
    deadline = time.monotonic() + 120

    def poison() -> Any:
        with cluster.store.session() as s:
            return next(ln for ln in q.iter_lines(s, job_id) if ln.custom_id == "poison")

    while (line := poison()).state != "failed" and time.monotonic() < deadline:
        if line.state == "running" and line.lease_owner:
            pid = int(line.lease_owner.split(":")[1])
            if pid not in killed:
                time.sleep(1.0)  # the lines travelling with it finish and are recorded first
                subprocess.run(["kill", "-9", str(pid)], check=False)
                killed.add(pid)
        time.sleep(0.1)
    cluster.wait_done(job_id, timeout=60)
    with cluster.store.session() as s:
        counts = q.state_counts(s, job_id)
    line = poison()
    assert line.state == "failed", cluster.tail_logs()
    assert line.error_code == "poison_line"
    assert len(killed) == 3
    assert counts["succeeded"] == 5


def test_status_json_reports_counts_for_a_distributed_job(cluster: Cluster, tmp_path: Path) -> None:
    path, _ = embedding_rows(tmp_path, 50)
    cluster.start_worker("a")
    job_id = cluster.submit(path)
    cluster.wait_done(job_id)
    result = subprocess.run(
        [sys.executable, "-m", "batcher", "status", str(job_id), "--json"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"]["succeeded"] == 50
    assert data["mode"] == "celery"
    assert data["status"] == "completed"


def test_kill_9_pool_child_repeats_at_most_the_calls_in_flight(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    """Answers that landed before a pool child was killed are replayed from its journal, not
    called again: repeats (from the relay's per-body counter) stay within the calls in flight."""
    in_flight, kills = 8, 3
    path, rows = embedding_rows(tmp_path, 600)
    cluster.start_worker("a")
    job_id = cluster.submit(path, options={"pack": False, "concurrency": in_flight})
    for k in range(1, kills + 1):
        deadline = time.monotonic() + 120
        while relay.stats()["served"] < k * 120:
            assert time.monotonic() < deadline, cluster.tail_logs()
            time.sleep(0.01)
        [child] = child_pids(cluster.workers["a"].pid)
        subprocess.run(["kill", "-9", str(child)], check=True)
    cluster.wait_done(job_id, timeout=180)
    assert_one_result_each(cluster, job_id, rows, tmp_path)
    assert extra_calls(relay, rows) <= kills * in_flight
