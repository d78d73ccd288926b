"""`batcher run` end to end over real loopback HTTP against the stand-in relay, on SQLite and
PostgreSQL: every stored result belongs to its request, usage adds up to what the relay served,
faults end in exactly one result per line, a killed run resumes without calling a done line again.
"""

from __future__ import annotations

import base64
import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.answers import (
    body_key,
    expected_audio,
    expected_chat_content,
    expected_completion_text,
    expected_embedding,
)
from batcher.devrelay.faults import ALL_FAULTS
from jobs import store as q
from jobs.db import Store
from jobs.models import JobStatus
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow
KEY = RELAY_KEY


def chat(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question {i}: 你好 {i}"}],
    } | extra


def mixed_requests() -> list[dict[str, Any]]:
    rows = [batch_line(f"chat-{i}", "/v1/chat/completions", chat(i)) for i in range(5)]
    rows.append(batch_line("chat-n2", "/v1/chat/completions", chat(99, n=2, max_tokens=50)))
    rows += [
        batch_line(f"comp-{i}", "/v1/completions", {"model": "i", "prompt": f"say {i}"}) for i in range(3)
    ]
    rows.append(batch_line("emb-float", "/v1/embeddings", {"model": "e", "input": "alpha beta"}))
    rows.append(
        batch_line(
            "emb-b64", "/v1/embeddings", {"model": "e", "input": ["x", "y"], "encoding_format": "base64"}
        )
    )
    rows.append(batch_line("emb-dim", "/v1/embeddings", {"model": "e", "input": "z", "dimensions": 4}))
    speech = {"model": "tts-1", "input": "hello 你好", "voice": "alloy", "response_format": "wav"}
    rows.append(batch_line("tts-1", "/v1/audio/speech", speech))
    return rows


def check_body(row: dict[str, Any], request: dict[str, Any], url: str) -> None:
    body = row["response"]["body"]
    if url == "/v1/chat/completions":
        contents = [c["message"]["content"] for c in body["choices"]]
        base = expected_chat_content(request)
        assert contents == [base] + [f"{base} #{i}" for i in range(1, len(contents))]
        assert len(contents) == request.get("n", 1)
    elif url == "/v1/completions":
        assert body["choices"][0]["text"] == expected_completion_text(request)
    elif url == "/v1/embeddings":
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        dim = request.get("dimensions", 8)
        expected = [expected_embedding(x, dim) for x in inputs]
        if request.get("encoding_format") == "base64":  # exported as the relay sent it
            expected = [base64.b64encode(struct.pack(f"<{dim}f", *v)).decode() for v in expected]
        assert [d["embedding"] for d in body["data"]] == expected
    else:
        assert Path(body["audio_path"]).read_bytes() == expected_audio(request)
        assert body["format"] == "wav"
        assert body["bytes"] == len(expected_audio(request))


def test_run_all_four_endpoints_results_match_requests(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = mixed_requests()
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(source), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    exported = read_jsonl(out)
    assert [r["custom_id"] for r in exported] == [r["custom_id"] for r in rows]
    for row, line in zip(exported, rows, strict=True):
        assert set(row) == {"id", "custom_id", "response", "error"}
        assert row["id"].startswith("batch_req_")
        assert row["error"] is None
        assert row["response"]["status_code"] == 200
        assert row["response"]["request_id"].startswith("req_")
        check_body(row, line["body"], line["url"])
    store = db
    lines = all_lines(store)
    served = relay.stats()["usage"]
    assert sum(ln.prompt_tokens or 0 for ln in lines) == served["prompt_tokens"]
    assert sum(ln.completion_tokens or 0 for ln in lines) == served["completion_tokens"]
    assert sum(ln.characters or 0 for ln in lines) == served["characters"]
    assert not any(ln.usage_estimated for ln in lines)
    assert len(all_attempts(store)) == relay.stats()["calls"] == len(rows)


def test_run_with_ten_percent_faults_of_every_kind_ends_with_one_result_per_line(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(
        RelayConfig(api_key=KEY, fault_rate=0.10, faults=ALL_FAULTS, hang_seconds=5.0, retry_after=0.2)
    )
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat(i)) for i in range(200)]
    rows += [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"}) for i in range(100)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run",
        str(source),
        "-o",
        str(out),
        "--timeout",
        "1",
        "--max-attempts",
        "12",
        "--max-in-flight",
        "32",
        "--no-pack",
    )
    assert result.exit_code == 0, result.stderr
    exported = read_jsonl(out)
    assert Counter(r["custom_id"] for r in exported) == Counter(r["custom_id"] for r in rows)
    for row, line in zip(exported, rows, strict=True):
        check_body(row, line["body"], line["url"])
    stats = relay.stats()
    assert set(stats["by_fault"]) >= set(ALL_FAULTS)  # every kind was injected
    store = db
    attempts = all_attempts(store)
    assert len(attempts) == stats["calls"]  # every upstream call recorded
    lines = all_lines(store)
    assert all(ln.state == "succeeded" for ln in lines)
    throttled = sum(1 for a in attempts if a.error_class in ("rate_limited", "overloaded"))
    assert throttled >= stats["by_fault"]["429"]
    assert sum(ln.attempts for ln in lines) == stats["calls"] - throttled  # 429s use no attempt


def test_run_permanent_errors_are_exported_with_their_error(
    env: str, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line("good", "/v1/chat/completions", chat(1)),
        batch_line(
            "bad", "/v1/chat/completions", chat(2, messages=[{"role": "user", "content": "[[fault:400]]"}])
        ),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    result = invoke("run", str(source), "-o", str(out), "--errors", str(errors))
    assert result.exit_code == 3  # completed, some lines failed
    assert [r["custom_id"] for r in read_jsonl(out)] == ["good"]
    [failed] = read_jsonl(errors)
    assert failed["custom_id"] == "bad"
    assert failed["response"]["status_code"] == 400
    assert failed["error"]["message"]
    assert failed["error"]["code"]


def test_run_with_a_bad_key_stops_the_job_without_burning_lines(
    env: str, db: Store, relay: RelayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-000000000")
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat(i)) for i in range(50)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--max-in-flight", "2")
    assert result.exit_code == 1
    assert "stopped" in result.stderr
    assert "sk-wrong-key" not in result.stderr + result.stdout
    with db.session() as s:
        job = q.list_jobs(s)[0]
        assert job.status == JobStatus.STOPPED
        assert q.state_counts(s, job.id or 0)["pending"] >= 48
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = invoke("run-job", str(job.id))
    assert result.exit_code == 0, result.stderr


def test_export_csv_has_one_row_per_line(env: str, relay: RelayServer, tmp_path: Path) -> None:
    rows = mixed_requests()
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("run", str(source), "-o", str(tmp_path / "out.jsonl")).exit_code == 0
    csv_path = tmp_path / "out.csv"
    assert invoke("export", "1", "-o", str(csv_path), "--format", "csv").exit_code == 0
    import csv

    with csv_path.open(encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["custom_id"] for r in table] == [r["custom_id"] for r in rows]
    by_id = {r["custom_id"]: r for r in table}
    assert by_id["chat-0"]["text"] == expected_chat_content(rows[0]["body"])
    assert by_id["emb-dim"]["embedding_dim"] == "4"
    assert by_id["tts-1"]["characters"] == str(len("hello 你好"))
    assert all(r["state"] == "succeeded" for r in table)


def test_rerunning_the_same_file_reuses_the_job(env: str, relay: RelayServer, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "e", "input": "x"})]
    )
    assert invoke("run", str(source), "-o", str(tmp_path / "o.jsonl")).exit_code == 0
    again = invoke("run", str(source), "-o", str(tmp_path / "o2.jsonl"))
    assert again.exit_code == 0
    assert "already submitted as job 1" in again.stderr
    assert relay.stats()["calls"] == 1
    fresh = invoke("run", str(source), "-o", str(tmp_path / "o3.jsonl"), "--new")
    assert "job 2" in fresh.stderr


def test_hostile_file_reports_every_line_and_stores_nothing(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    good = orjson.dumps(batch_line("ok", "/v1/embeddings", {"model": "e", "input": "x"})).decode()
    bad = [
        "{not json",
        '{"custom_id": "a", "method": "POST", "url": "https://evil.example.com/v1/embeddings", "body": {"model": "e", "input": "x"}}',
        '{"custom_id": "b", "method": "GET", "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}',
        '{"custom_id": "c", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}',
        '{"custom_id": "ok", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}',
        '{"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": NaN}}',
    ]
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join([good, *bad]) + "\n", encoding="utf-8")
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 1
    for line_no in range(2, 8):
        assert f"hostile.jsonl:{line_no}:" in result.stderr
    assert "hostile.jsonl:1:" not in result.stderr
    with db.session() as s:
        assert q.list_jobs(s) == []
    assert relay.stats()["calls"] == 0


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_sigkill_mid_job_then_run_job_never_calls_a_done_line_again(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, latency=0.1))
    rows = [batch_line(f"c{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"}) for i in range(300)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("submit", str(source), "--no-queue", "--no-pack").exit_code == 0
    store = db
    proc = subprocess.Popen(
        [sys.executable, "-m", "batcher", "run-job", "1", "--max-in-flight", "8"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def some_done() -> bool:
        with store.session() as s:
            return q.get_job(s, 1).succeeded >= 40

    _wait_for(some_done)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.session() as s:
        done_at_kill = {ln.custom_id for ln in q.iter_lines(s, 1) if ln.state == "succeeded"}
        assert q.state_counts(s, 1)["running"] > 0  # it really died mid-job, holding leases
    calls_at_kill = dict(relay.stats()["per_key"])
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    calls_after = relay.stats()["per_key"]
    keys = {r["custom_id"]: body_key(r["body"]) for r in rows}
    for custom_id in done_at_kill:
        assert calls_after[keys[custom_id]] == calls_at_kill[keys[custom_id]], custom_id
    exported = tmp_path / "out.jsonl"
    assert invoke("export", "1", "-o", str(exported)).exit_code == 0
    assert Counter(r["custom_id"] for r in read_jsonl(exported)) == Counter(r["custom_id"] for r in rows)


def test_run_packs_embedding_lines_and_splits_them_back_exactly(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text number {i}"}) for i in range(500)
    ]
    rows.append(
        batch_line("b64", "/v1/embeddings", {"model": "e", "input": "other", "encoding_format": "base64"})
    )
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(source), "-o", str(out), "--pack-size", "100")
    assert result.exit_code == 0, result.stderr
    exported = read_jsonl(out)
    assert [r["custom_id"] for r in exported] == [r["custom_id"] for r in rows]
    for row, line in zip(exported, rows, strict=True):
        check_body(row, line["body"], line["url"])
        assert [d["index"] for d in row["response"]["body"]["data"]] == [0]
    # 5 full packs of 100 and the base64 line alone; a claim slower than the linger may cut one pack short
    assert 6 <= relay.stats()["calls"] <= 7
    lines = all_lines(db)
    assert sum(ln.prompt_tokens or 0 for ln in lines) == relay.stats()["usage"]["prompt_tokens"]
    usage_in_bodies = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in exported)
    assert usage_in_bodies == relay.stats()["usage"]["prompt_tokens"]
    attempts = all_attempts(db)  # one row per call, carrying its lines and the call's tokens
    assert len(attempts) == relay.stats()["calls"]
    assert sum(a.lines or 1 for a in attempts) == len(rows)
    assert sum(a.prompt_tokens or 0 for a in attempts) == relay.stats()["usage"]["prompt_tokens"]
    assert {ln.attempts for ln in lines} == {1}


def test_run_bisects_a_refused_pack_down_to_the_bad_line(
    env: str, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"}) for i in range(16)]
    rows[11]["body"]["input"] = "bad [[fault:400]]"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    result = invoke("run", str(source), "-o", str(out), "--errors", str(errors), "--max-attempts", "2")
    assert result.exit_code == 3
    assert [r["custom_id"] for r in read_jsonl(errors)] == ["e11"]
    assert len(read_jsonl(out)) == 15
    assert relay.stats()["calls"] == 1 + 2 + 2 + 2 + 2  # the pack, then halves down to one line


def test_budget_pauses_the_job_then_a_raised_budget_finishes_it(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."m"]\ninput = 1000000\noutput = 1000000\n')  # $1 per token: easy sums
    rows = [
        batch_line(
            f"c{i}",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": f"q {i}"}], "max_tokens": 10},
        )
        for i in range(20)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = [
        "run",
        str(source),
        "-o",
        str(out),
        "--budget",
        "100",
        "--prices",
        str(prices),
        "--max-in-flight",
        "1",
    ]
    first = invoke(*args)
    assert first.exit_code == 1
    assert "budget reached" in first.stderr
    with db.session() as s:
        job = q.get_job(s, 1)
        done = q.state_counts(s, 1)["succeeded"]
    spent = sum(a.total_tokens or 0 for a in all_attempts(db))  # $1 per token
    assert job.status == JobStatus.PAUSED
    assert 0 < done < 20
    assert spent <= 100  # never past the budget
    assert spent + 30 > 100  # and stopped only when the next call (estimated at most $30) might pass it
    second = invoke("run-job", "1", "--budget", "1000")
    assert second.exit_code == 0, second.stderr
    assert relay.stats()["calls"] == 20  # no line called twice
    with db.session() as s:
        assert q.get_job(s, 1).status == JobStatus.COMPLETED
