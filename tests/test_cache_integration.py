"""The response cache end to end: `batcher run` and Celery workers over loopback HTTP against the
stand-in relay, on SQLite and PostgreSQL. Twins in a job are called once, a rerun is answered from
the store, the exports are identical, the cached lines cost nothing and the report says what they
saved."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayServer
from batcher.export import export_job
from jobs import store as q
from jobs.db import Store
from tests.cluster import Cluster, workers_on
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def chat(i: int, **extra: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {i}"}], "temperature": 0}
    return body | extra


def rows_with_twins() -> list[dict[str, Any]]:
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat(i % 6)) for i in range(12)]  # 6 twins
    rows += [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"t {i % 4}"}) for i in range(8)]
    rows.append(batch_line("sampled", "/v1/chat/completions", chat(0, temperature=0.8)))
    return rows


def responses(path: Path) -> dict[str, Any]:
    return {r["custom_id"]: r["response"]["body"] for r in read_jsonl(path)}


def usage_json(*jobs: int) -> dict[str, Any]:
    result = invoke("usage", *map(str, jobs), "--format", "json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_twins_called_once_and_a_rerun_answered_from_the_cache(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = rows_with_twins()
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    first_out, second_out = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    result = invoke("run", str(source), "-o", str(first_out), "--no-pack")
    assert result.exit_code == 0, result.stderr
    assert relay.stats()["calls"] == 6 + 4 + 1  # each distinct request once; the sampled one too
    first = read_jsonl(first_out)
    assert Counter(r["custom_id"] for r in first) == Counter(r["custom_id"] for r in rows)
    assert sum(1 for r in first if r.get("cached")) == 6 + 4
    assert responses(first_out)["c0"] == responses(first_out)["c6"]

    result = invoke("run", str(source), "-o", str(second_out), "--new", "--no-pack")
    assert result.exit_code == 0, result.stderr
    assert relay.stats()["calls"] == 11 + 1  # only the sampled line is called again
    assert {k: v for k, v in responses(second_out).items() if k != "sampled"} == {
        k: v for k, v in responses(first_out).items() if k != "sampled"
    }
    second = read_jsonl(second_out)
    assert [r["custom_id"] for r in second if not r.get("cached")] == ["sampled"]
    assert all(r["cached"] is True for r in second if r["custom_id"] != "sampled")

    with db.session() as s:
        second_job = q.list_jobs(s)[0].id
    assert second_job is not None
    attempts = [a for a in all_attempts(db) if a.job_id == second_job]
    assert len(attempts) == 1  # the cached lines made no call and record none
    report = usage_json(second_job)
    assert report["total"]["calls"] == 1
    assert report["cache_saved"]["lines"] == len(rows) - 1
    assert report["cache_saved"]["prompt_tokens"] > 0
    text = invoke("usage", str(second_job)).stdout
    assert f"cache: {len(rows) - 1} lines answered from earlier results" in text
    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert stats["entries"] == 10 and stats["hits"] == 10 + 10


def test_no_cache_calls_every_line_and_cache_all_takes_sampled_ones(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [batch_line(f"s{i}", "/v1/chat/completions", chat(1, temperature=0.9)) for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("run", str(source), "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    assert relay.stats()["calls"] == 3  # sampled: a fresh draw each
    assert invoke("run", str(source), "-o", str(tmp_path / "b.jsonl"), "--new", "--cache-all").exit_code == 0
    assert relay.stats()["calls"] == 4  # one call for the three twins
    assert invoke("run", str(source), "-o", str(tmp_path / "c.jsonl"), "--new", "--cache-all").exit_code == 0
    assert relay.stats()["calls"] == 4  # and none on a rerun
    assert invoke("run", str(source), "-o", str(tmp_path / "d.jsonl"), "--new", "--no-cache").exit_code == 0
    assert relay.stats()["calls"] == 7
    assert not any(ln.cached for ln in all_lines(db) if ln.job_id == 4)


def test_export_marks_cached_lines_in_csv(env: str, db: Store, relay: RelayServer, tmp_path: Path) -> None:
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat(0)) for i in range(2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("run", str(source), "-o", str(tmp_path / "out.jsonl")).exit_code == 0
    out = tmp_path / "out.csv"
    assert invoke("export", "1", "-o", str(out), "--format", "csv").exit_code == 0
    import csv

    with out.open() as f:
        assert [row["cached"] for row in csv.DictReader(f)] == ["0", "1"]


def test_cache_clear_then_the_next_run_calls_again(env: str, relay: RelayServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [batch_line("c", "/v1/chat/completions", chat(0))])
    assert invoke("run", str(source), "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    result = invoke("cache", "clear", "--older-than", "30d")
    assert result.exit_code == 0 and "removed 0 cached answers" in result.stderr
    assert invoke("cache", "clear").stderr.strip() == "removed 1 cached answers"
    assert invoke("run", str(source), "-o", str(tmp_path / "b.jsonl"), "--new").exit_code == 0
    assert relay.stats()["calls"] == 2


# --- Celery workers ----------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, relay: RelayServer, redis_url: str, pg_url: str) -> Iterator[Cluster]:
    with workers_on(tmp_path, relay_url=relay.url, key=RELAY_KEY, db_url=pg_url, broker_url=redis_url) as c:
        yield c


@pytest.mark.redis
@pytest.mark.postgres
def test_workers_answer_a_second_job_from_the_first_ones_results(
    cluster: Cluster, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"t {i % 50}"}) for i in range(100)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    cluster.start_worker("a")
    first = cluster.submit(source)
    cluster.wait_done(first)
    calls = relay.stats()["calls"]
    second = cluster.submit(source)
    cluster.wait_done(second)
    assert relay.stats()["calls"] == calls  # every line of the second job came from the cache
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    export_job(cluster.store, first, one)
    export_job(cluster.store, second, two)
    assert responses(one) == responses(two)
    assert all(r.get("cached") for r in read_jsonl(two))
    with cluster.store.session() as s:
        assert q.get_job(s, second).succeeded == 100
        assert q.state_counts(s, second)["succeeded"] == 100
