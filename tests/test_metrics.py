"""workers.metrics: the Prometheus endpoint of `batcher run` and of a Celery worker, against the store.

The endpoint is scraped over HTTP and its counters compared with what the store recorded of the
same calls: calls (distinct call ids), 429s, tokens, lines by state, the latency histogram's count.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from batcher.devrelay import RelayConfig, RelayServer
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.models import Attempt, Job
from jobs.records import AttemptRecord, LineResult, Usage, WorkItem
from tests.cluster import ROOT, Cluster, cluster_env
from tests.helpers import RELAY_KEY, batch_line, invoke, write_jsonl
from tests.services import free_port
from workers import metrics
from workers.cost import cost_of_attempt
from workers.prices import load_prices
from workers.ratelimit import PaceView

START = datetime(2026, 5, 1, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and match.items() <= dict(labels).items())


def test_observer_counts_calls_as_the_recorder_sees_them() -> None:
    m = metrics.enable()
    book = load_prices([])
    obs = metrics.Observer(m, book, Decimal(1))
    line = {"job_id": 1, "custom_id": "a", "endpoint": Endpoint("/v1/embeddings"), "model": "text-embedding-3-small",
            "body": "{}", "attempts": 0, "est_tokens": 1}  # fmt: skip
    pack = [WorkItem(request_id=1, **line), WorkItem(request_id=2, **line)]  # type: ignore[arg-type]
    obs.sending("c1", pack)
    obs.sending("c2", pack[:1])
    value = m.registry.get_sample_value
    assert value("batcher_calls_in_flight") == 2
    used = Usage(prompt_tokens=1000, total_tokens=1000)
    for request_id in (1, 2):  # one packed call: two attempt rows
        obs.recorded(AttemptRecord(request_id, 1, 1, START, 300, 200, "ok", "", usage=used, call_id="c1"))
    obs.recorded(AttemptRecord(1, 1, 2, START, 10, 429, "rate_limited", "rate_limited", call_id="c2"))
    obs.finished(LineResult(1, 1, "succeeded"))
    obs.retrying("/v1/embeddings", "text-embedding-3-small")
    obs.paced({"relay|text-embedding-3-small": PaceView(12.5, None, True, 0.0, 0)}, 17)
    labels = {"endpoint": "/v1/embeddings", "model": "text-embedding-3-small"}
    assert value("batcher_calls_total", labels | {"status": "200"}) == 1
    assert value("batcher_calls_total", labels | {"status": "429"}) == 1
    assert value("batcher_rate_limited_total", labels) == 1
    assert value("batcher_call_duration_seconds_count", labels) == 2
    assert value("batcher_call_duration_seconds_sum", labels) == pytest.approx(0.31)
    assert value("batcher_tokens_total", labels | {"kind": "prompt"}) == 2000
    assert value("batcher_calls_in_flight") == 0
    one = cost_of_attempt(used, book.lookup("text-embedding-3-small"))
    assert one is not None and value("batcher_cost_usd_total", labels) == pytest.approx(2 * float(one))
    assert value("batcher_lines_total", {"state": "succeeded"}) == 1
    assert value("batcher_retries_total", labels) == 1
    assert value("batcher_pace_requests_per_second", {"model": "text-embedding-3-small"}) == 12.5
    assert value("batcher_concurrency") == 17
    assert metrics.enable().registry is not m.registry  # a new run counts from zero


def store_counts(store: Store, job_id: int) -> dict[str, float]:
    with store.session() as s:
        attempts = list(s.exec(select(Attempt).where(Attempt.job_id == job_id)))
        job = s.get(Job, job_id)
    assert job is not None
    return {
        "calls": len({a.call_id for a in attempts}),
        "429": len({a.call_id for a in attempts if a.status_code == 429}),
        "prompt": sum(a.prompt_tokens or 0 for a in attempts),
        "completion": sum(a.completion_tokens or 0 for a in attempts),
        # Each ok attempt is a succeeded line result: a line run twice (a lease ran out under
        # load and a second chunk took it) counts twice here and in the metric alike.
        "succeeded": sum(1 for a in attempts if a.outcome == "ok"),
    }


def metric_counts(samples: Samples) -> dict[str, float]:
    return {
        "calls": total(samples, "batcher_calls_total"),
        "429": total(samples, "batcher_rate_limited_total"),
        "prompt": total(samples, "batcher_tokens_total", kind="prompt"),
        "completion": total(samples, "batcher_tokens_total", kind="completion"),
        "succeeded": total(samples, "batcher_lines_total", state="succeeded"),
    }


def chat_rows(n: int, *, bad: int = -1) -> list[dict[str, object]]:
    return [
        batch_line(
            f"q{i}",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"hi {i}" + (" [[fault:400]]" if i == bad else "")}],
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def limited_relay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RelayServer]:
    with RelayServer(RelayConfig(api_key=RELAY_KEY, latency=0.02, rps_limit=20)) as relay:
        monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
        monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
        monkeypatch.setenv("BATCHER_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
        yield relay


def test_run_metrics_endpoint_matches_the_store(limited_relay: RelayServer, tmp_path: Path) -> None:
    port = free_port()
    source = write_jsonl(tmp_path / "in.jsonl", chat_rows(80, bad=5))
    try:
        result = invoke("run", str(source), "--metrics-port", str(port), "--max-in-flight", "16")
        assert result.exit_code == 3, result.output  # one line failed
        samples = scrape(port)
    finally:
        metrics.stop_server()
    with Store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        expected = store_counts(store, 1)
    assert metric_counts(samples) == expected
    assert total(samples, "batcher_lines_total", state="failed") == 1
    assert expected["429"] > 0  # the relay's limit was met: the 429s are really counted
    assert total(samples, "batcher_call_duration_seconds_count") == expected["calls"]
    assert total(samples, "batcher_cost_usd_total") > 0
    assert total(samples, "batcher_calls_in_flight") == 0


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_worker_metrics_sum_the_pool_processes(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    """`batcher worker --metrics-port` with two pool processes: the main process serves their sum."""
    with RelayServer(RelayConfig(api_key=RELAY_KEY, latency=0.02)) as relay:
        env = cluster_env(tmp_path, relay_url=relay.url, key=RELAY_KEY, db_url=pg_url, broker_url=redis_url)
        cluster = Cluster(tmp_path, env, Store(pg_url))
        port = free_port()
        log = tmp_path / "worker.log"
        command = [sys.executable, "-m", "batcher", "worker", "--processes", "2", "--metrics-port", str(port)]
        with log.open("wb") as out:
            worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        cluster.workers["w"], cluster.logs["w"] = worker, log
        try:
            rows = chat_rows(120, bad=7)
            jobs = [
                cluster.submit(write_jsonl(tmp_path / f"in{n}.jsonl", rows), options={"pack": False})
                for n in (1, 2)
            ]
            for job_id in jobs:
                cluster.wait_done(job_id)
            deadline = time.monotonic() + 60
            while (got := metric_counts(_scrape_when_up(port))) != (expected := _summed(cluster.store, jobs)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)  # a chunk that took lines twice may still be writing its last records
            # Calls made in the pool processes, served by the main one: multiprocess mode at work.
            assert got == expected, cluster.tail_logs()
            assert expected["calls"] >= 240
        finally:
            cluster.stop()
            cluster.store.close()


def _summed(store: Store, jobs: list[int]) -> dict[str, float]:
    per_job = [store_counts(store, job_id) for job_id in jobs]
    return {k: sum(c[k] for c in per_job) for k in per_job[0]}


def _scrape_when_up(port: int) -> Samples:
    try:
        return scrape(port)
    except httpx.TransportError:
        return {}
