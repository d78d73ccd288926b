"""Every endpoint family in one file, over real loopback HTTP against the stand-in relay:
`batcher run` in process, and two Celery workers. Each stored result is checked against its
request and the usage against what the relay served.

A family adds itself to ``CASES`` (its lines and how to check an exported body): both tests, and
the kill-and-resume test, then run it with the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.answers import body_key, expected_chat_content, expected_embedding
from batcher.devrelay.claude_answers import claude_usage, expected_claude_text
from batcher.devrelay.gemini_answers import expected_gemini_text, gemini_embedding, gemini_usage_metadata
from batcher.devrelay.openai_answers import expected_output_text, moderation_result
from batcher.export import export_job
from batcher.usage import usage_report
from jobs.db import Store
from tests.cluster import Cluster, relay_cluster
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl
from workers.endpoints.responses import output_text
from workers.prices import load_prices

pytestmark = pytest.mark.slow

Body = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """Lines of one family and how to check an exported answer body against its request."""

    url: str
    body: Callable[[int], Body]
    check: Callable[[Body, Body], None]
    reports_usage: bool = True  # False: the answer has no usage (batcher estimates and flags it)


def _chat_check(answer: Body, request: Body) -> None:
    assert answer["choices"][0]["message"]["content"] == expected_chat_content(request)


def _responses_check(answer: Body, request: Body) -> None:
    assert output_text(answer) == expected_output_text(request)
    assert answer["usage"]["input_tokens_details"]["cached_tokens"] == (
        answer["usage"]["input_tokens"] // 2 if "prompt_cache_key" in request else 0
    )


def _moderation_check(answer: Body, request: Body) -> None:
    texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
    assert answer["results"] == [moderation_result(t) for t in texts]


def _claude_check(answer: Body, request: Body) -> None:
    assert answer["content"] == [{"type": "text", "text": expected_claude_text(request)}]
    assert answer["usage"] == claude_usage(request)


def _gemini_check(answer: Body, request: Body) -> None:
    assert answer["candidates"][0]["content"]["parts"] == [{"text": expected_gemini_text(request)}]
    assert answer["usageMetadata"] == gemini_usage_metadata(request)


def _gemini_embed_check(answer: Body, request: Body) -> None:
    assert answer["embeddings"] == [{"values": gemini_embedding(r["content"])} for r in request["requests"]]


def _embedding_check(answer: Body, request: Body) -> None:
    assert answer["data"][0]["embedding"] == expected_embedding(request["input"], 8)


PNG_1x1 = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

CASES: list[Case] = [
    Case(
        "/v1/chat/completions",
        lambda i: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}]},
        _chat_check,
    ),
    Case(
        "/v1/chat/completions",
        lambda i: {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"what is in image {i}?"},
                        {"type": "image_url", "image_url": {"url": PNG_1x1, "detail": "low"}},
                    ],
                }
            ],
        },
        _chat_check,
    ),
    Case("/v1/embeddings", lambda i: {"model": "e", "input": f"text {i}"}, _embedding_check),
    Case(
        "/v1/responses",
        lambda i: (
            {"model": "gpt-4.1-mini", "input": f"tell me {i}", "instructions": "be brief"}
            | ({"prompt_cache_key": "k", "reasoning": {"effort": "low"}} if i % 2 else {})
        ),
        _responses_check,
    ),
    Case(
        "/v1/moderations",
        lambda i: {"model": "omni-moderation-latest", "input": [f"calm {i}", f"violence {i}"]},
        _moderation_check,
        reports_usage=False,
    ),
    Case(
        "/v1/messages",
        lambda i: {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "system": [
                {"type": "text", "text": "a long shared prompt", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": f"context {i}",
                            "cache_control": {"type": "ephemeral", "ttl": "1h"},
                        },
                        {"type": "text", "text": f"question {i}"},
                    ],
                }
            ],
        },
        _claude_check,
    ),
    Case(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        lambda i: {
            "contents": [{"role": "user", "parts": [{"text": f"question {i}"}]}],
            "generationConfig": {"maxOutputTokens": 64}
            | ({"thinkingConfig": {"thinkingBudget": 8}} if i % 2 else {}),
        },
        _gemini_check,
    ),
    Case(
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        lambda i: {
            "requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": f"t{i} {j}"}]}}
                for j in range(2)
            ]
        },
        _gemini_embed_check,
        reports_usage=False,
    ),
]


def _streamed(case: Case) -> Case:
    return Case(case.url, lambda i: case.body(i) | {"stream": True}, case.check, case.reports_usage)


CASES += [_streamed(c) for c in CASES if c.url in ("/v1/chat/completions", "/v1/responses", "/v1/messages")]
CASES.append(
    Case(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        lambda i: {"contents": [{"role": "user", "parts": [{"text": f"streamed {i}"}]}]},
        _gemini_check,
    )
)


def mixed_rows(per_case: int) -> list[Body]:
    """``per_case`` lines of every case, interleaved, with unique custom_ids."""
    return [
        batch_line(f"{n}-{i}", case.url, case.body(i))
        for i in range(per_case)
        for n, case in enumerate(CASES)
    ]


def _case_of(custom_id: str) -> Case:
    return CASES[int(custom_id.split("-", maxsplit=1)[0])]


def check_exported(out: Path, rows: list[Body]) -> None:
    exported = read_jsonl(out)
    assert [r["custom_id"] for r in exported] == [r["custom_id"] for r in rows]
    for row, line in zip(exported, rows, strict=True):
        assert row["error"] is None, row
        _case_of(line["custom_id"]).check(row["response"]["body"], line["body"])


def check_usage(store: Store, relay: RelayServer) -> None:
    """Lines whose answers report usage keep exactly what the relay served; the others flag it."""
    lines = all_lines(store)
    reported = [ln for ln in lines if _case_of(ln.custom_id).reports_usage]
    assert not any(ln.usage_estimated for ln in reported)
    assert all(ln.usage_estimated for ln in lines if ln not in reported)
    served = relay.stats()["reported_usage"]
    assert sum(ln.prompt_tokens or 0 for ln in reported) == served["prompt_tokens"]
    assert sum(ln.completion_tokens or 0 for ln in reported) == served["completion_tokens"]


def test_run_a_file_of_every_family(env: str, db: Store, relay: RelayServer, tmp_path: Path) -> None:
    rows = mixed_rows(4)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(source), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    check_exported(out, rows)
    check_usage(db, relay)
    assert relay.stats()["calls"] < len(rows)  # embeddings were packed, nothing retried


def test_a_mixed_job_killed_mid_run_resumes_without_calling_a_finished_line_again(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.1))
    rows = mixed_rows(12)
    assert (
        invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue", "--no-pack").exit_code
        == 0
    )
    command = [sys.executable, "-m", "batcher", "run-job", "1", "--max-in-flight", "6"]
    proc = subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while sum(ln.state == "succeeded" for ln in all_lines(db)) < len(rows) // 4:
        assert time.monotonic() < deadline and proc.poll() is None, "run-job ended or stalled before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = all_lines(db)
    keys = {ln.custom_id: body_key(orjson.loads(ln.body)) for ln in lines}
    done_at_kill = {ln.custom_id for ln in lines if ln.state == "succeeded"}
    assert len(done_at_kill) < len(rows)
    calls_at_kill = dict(relay.stats()["per_key"])
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    calls_after = relay.stats()["per_key"]
    assert {c: calls_after[keys[c]] for c in done_at_kill} == {
        c: calls_at_kill[keys[c]] for c in done_at_kill
    }
    out = tmp_path / "out.jsonl"
    assert invoke("export", "1", "-o", str(out)).exit_code == 0
    check_exported(out, rows)


def test_claude_overloaded_529_is_waited_out_without_using_attempts(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "busy [[fault:overloaded529x2]]"}],
    }
    rows = [batch_line("busy", "/v1/messages", body)]
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out), "--max-attempts", "1"
    )
    assert result.exit_code == 0, result.stderr
    check_exported_claude = read_jsonl(out)[0]
    assert check_exported_claude["response"]["body"]["content"][0]["text"] == expected_claude_text(body)
    assert relay.stats()["by_status"] == {529: 2, 200: 1}
    assert [a.error_class for a in all_attempts(db)] == ["overloaded", "overloaded", "ok"]


def test_native_error_envelopes_fail_their_lines_with_the_relays_words(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line("claude", "/v1/messages", {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "[[fault:400]]"}]}),
        batch_line("gemini", "/v1beta/models/g:generateContent", {"contents": [{"parts": [{"text": "[[fault:400]]"}]}]}),
    ]  # fmt: skip
    errors = tmp_path / "errors.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--errors", str(errors))
    assert result.exit_code == 3, result.stderr  # both lines failed, the job ran
    failed = {r["custom_id"]: r["error"] for r in read_jsonl(errors)}
    assert failed["claude"]["code"] == "invalid_request_error"
    assert failed["gemini"]["code"] == "INVALID_ARGUMENT"
    assert {e["message"] for e in failed.values()} == {
        "400 invalid_request_error: invalid request (forced by marker)",
        "400 INVALID_ARGUMENT: invalid request (forced by marker)",
    }
    assert relay.stats()["by_status"] == {400: 2}  # a 400 is not retried


def test_a_cut_stream_is_retried_and_its_call_counted_as_unknown(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line("chat", "/v1/chat/completions", {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a [[fault:stream_cutx1]]"}]}),
        batch_line("claude", "/v1/messages", {"model": "c", "stream": True, "max_tokens": 9, "messages": [{"role": "user", "content": "b [[fault:stream_cutx1]]"}]}),
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    check_exported_cut = {r["custom_id"]: r["response"]["body"] for r in read_jsonl(out)}
    assert check_exported_cut["chat"]["choices"][0]["message"]["content"] == expected_chat_content(
        rows[0]["body"]
    )
    assert check_exported_cut["claude"]["content"][0]["text"] == expected_claude_text(rows[1]["body"])
    assert sorted(a.error_class for a in all_attempts(db)) == ["bad_body", "bad_body", "ok", "ok"]
    assert relay.stats()["by_fault"] == {"stream_cut": 2}
    assert usage_report(db, None, prices=load_prices()).total.unknown_calls == 2  # the relay billed them


def test_an_overload_event_mid_stream_is_retried_later_not_kept_truncated(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    marker = "[[fault:stream_overloadx1]]"
    rows = [
        batch_line("chat", "/v1/chat/completions", {"model": "m", "stream": True, "messages": [{"role": "user", "content": f"a {marker}"}]}),
        batch_line("claude", "/v1/messages", {"model": "c", "stream": True, "max_tokens": 9, "messages": [{"role": "user", "content": f"b {marker}"}]}),
        batch_line("responses", "/v1/responses", {"model": "r", "stream": True, "input": f"c {marker}"}),
        batch_line("gemini", "/v1beta/models/g:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": f"d {marker}"}]}]}),
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = invoke("run", str(source), "-o", str(out), "--max-attempts", "1")  # a "later" uses none
    assert result.exit_code == 0, result.stderr
    answers = {r["custom_id"]: r["response"]["body"] for r in read_jsonl(out)}
    assert answers["chat"]["choices"][0]["message"]["content"] == expected_chat_content(rows[0]["body"])
    assert answers["claude"]["content"][0]["text"] == expected_claude_text(rows[1]["body"])
    assert output_text(answers["responses"]) == expected_output_text(rows[2]["body"])
    parts = answers["gemini"]["candidates"][0]["content"]["parts"]
    assert parts == [{"text": expected_gemini_text(rows[3]["body"])}]
    attempts = all_attempts(db)
    assert sorted(a.error_class for a in attempts) == ["bad_body"] * 4 + ["ok"] * 4
    assert all(
        "overloaded" in (a.error_message or "").lower() for a in attempts if a.error_class == "bad_body"
    )
    assert relay.stats()["by_fault"] == {"stream_overload": 4}
    assert usage_report(db, None, prices=load_prices()).total.unknown_calls == 4  # streamed, maybe billed


def test_a_wrong_x_api_key_is_refused_even_with_a_right_bearer(relay: RelayServer) -> None:
    request = urllib.request.Request(
        relay.url + "/messages",
        data=b"{}",
        headers={
            "Authorization": f"Bearer {RELAY_KEY}",
            "x-api-key": "sk-wrong",
            "anthropic-version": "2023-06-01",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    caught.value.close()
    assert caught.value.code == 401


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[Cluster, RelayServer]]:
    with relay_cluster(
        tmp_path, RelayConfig(api_key=RELAY_KEY, latency=0.02), broker_url=redis_url, db_url=pg_url
    ) as both:
        yield both


@pytest.mark.redis
@pytest.mark.postgres
def test_two_celery_workers_run_a_file_of_every_family(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    workers, relay = cluster
    rows = mixed_rows(6)
    job_id = workers.submit(write_jsonl(tmp_path / "in.jsonl", rows), options={"pack": False})
    workers.start_worker("a")
    workers.start_worker("b")
    workers.wait_done(job_id)
    out = tmp_path / "out.jsonl"
    export_job(workers.store, job_id, out)
    check_exported(out, rows)
    check_usage(workers.store, relay)
    assert relay.stats()["calls"] == len(rows)
