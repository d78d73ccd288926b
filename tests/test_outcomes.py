"""Outcomes: what a finished call means for its lines, as attempt records and terminal results."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from jobs.endpoints import Endpoint
from jobs.records import LineResult, Usage, WorkItem
from workers import outcomes
from workers.client import RawResponse
from workers.endpoints.chat import CHAT
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.speech import SPEECH
from workers.outcomes import Answered, Call
from workers.resultfiles import write_result_file
from workers.retry import Classification, Verdict
from workers.units import Unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
OK = Classification(Verdict.OK, "ok", "", sent=True)
KEY = "sk-live-0123456789"


def clean(text: str) -> str:
    return text.replace(KEY, "***")


def line(n: int = 1, endpoint: Endpoint = CHAT, body: dict[str, object] | None = None) -> WorkItem:
    return WorkItem(n, 7, f"c{n}", endpoint, "m", orjson.dumps(body or {"model": "m"}).decode(), 0, 5)


def call(c: Classification, status: int | None, content: bytes = b"", **headers: str) -> Call:
    response = None if status is None else RawResponse(status, httpx.Headers(headers), content)
    return Call(c, response, T0, 12)


def test_an_attempt_records_the_call_and_scrubs_its_error() -> None:
    refused = Classification(Verdict.RETRY, "server_error", f"bad key {KEY}", code="500", sent=True)
    record = outcomes.attempt_record(
        line(), call(refused, 500, **{"x-request-id": f"id-{KEY}"}), 2, owner="w", clean=clean
    )
    assert (record.request_id, record.job_id, record.attempt_no, record.status_code) == (1, 7, 2, 500)
    assert (record.outcome, record.error_class, record.error_message) == (
        "retry",
        "server_error",
        "bad key ***",
    )
    assert (record.upstream_request_id, record.worker, record.sent) == ("id-***", "w", True)


@pytest.mark.parametrize(("sent", "recorded"), [(True, True), (None, True), (False, False)])
def test_an_attempt_is_sent_unless_known_not_to_be(sent: bool | None, recorded: bool) -> None:
    c = Classification(Verdict.RETRY, "connection", "x", sent=sent)
    assert outcomes.attempt_record(line(), call(c, None), 1, owner="w", clean=clean).sent is recorded


def test_an_ok_answer_has_no_error_message() -> None:
    record = outcomes.attempt_record(line(), call(OK, 200), 1, owner="w", clean=clean, usage=Usage(1, 1, 2))
    assert (record.error_message, record.usage) == (None, Usage(1, 1, 2))


def test_a_single_json_answer_is_one_success() -> None:
    answer = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    }
    unit = Unit.single(line(body={"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    [result] = outcomes.json_results(
        unit, call(OK, 200, orjson.dumps(answer), **{"x-request-id": "r1"}), clean
    )
    assert (result.state, result.status_code, result.upstream_request_id) == ("succeeded", 200, "r1")
    assert result.usage == Usage(4, 1, 5)
    assert orjson.loads(result.response_body or "")["choices"][0]["message"]["content"] == "hi"


def test_a_packed_answer_is_split_per_line_with_usage_that_adds_up() -> None:
    items = [line(1, EMBEDDINGS), line(2, EMBEDDINGS)]
    unit = Unit(items, [{"model": "m", "input": "a"}, {"model": "m", "input": ["b", "c"]}])
    answer = {
        "data": [{"index": i, "embedding": [float(i)]} for i in range(3)],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    results = outcomes.json_results(unit, call(OK, 200, orjson.dumps(answer)), clean)
    bodies = [orjson.loads(r.response_body or "") for r in results]
    assert [[d["index"] for d in b["data"]] for b in bodies] == [[0], [0, 1]]
    assert [r.vectors.matrix().tolist() for r in results if r.vectors] == [[[0.0]], [[1.0], [2.0]]]
    assert results[0].vectors and results[1].vectors
    assert results[0].vectors.data is results[1].vectors.data  # one block for the call
    assert sum(r.usage.prompt_tokens for r in results if r.usage) == 9


def test_a_packed_lines_result_is_what_a_success_of_its_own_would_be() -> None:
    items = [line(1, EMBEDDINGS), line(2, EMBEDDINGS)]
    items[1].cache_key = "k2"
    unit = Unit(items, [{"model": "m", "input": "a"}, {"model": "m", "input": "b"}])
    answer = {"data": [{"index": i, "embedding": [1.0]} for i in range(2)], "usage": {"prompt_tokens": 4}}
    answered = call(OK, 200, orjson.dumps(answer), **{"x-request-id": f"r-{KEY}"})
    results = outcomes.json_results(unit, answered, clean)
    for item, result in zip(items, results, strict=True):
        assert result.response_body is not None and result.usage is not None
        alone = outcomes.success(
            item, answered, result.response_body, result.usage, clean, vectors=result.vectors
        )
        assert result == alone
    assert [r.cache_key for r in results] == [None, "k2"] and results[0].upstream_request_id == "r-***"


def test_an_answered_packed_call_is_one_record_for_its_lines_with_the_whole_usage() -> None:
    unit = Unit([line(1, EMBEDDINGS), line(2, EMBEDDINGS)], [{"input": "a"}, {"input": "b"}], [3, 1])
    answer = {"data": [{"index": i, "embedding": [0.5]} for i in range(2)], "usage": {"prompt_tokens": 9}}
    c = call(OK, 200, orjson.dumps(answer))
    [record] = outcomes.call_records(unit, c, outcomes.json_results(unit, c, clean), owner="w", clean=clean)
    assert (record.request_id, record.attempt_no, record.carried) == (1, 3, ((1, 3), (2, 1)))
    assert record.usage is not None and record.usage.prompt_tokens == 9  # the call's, not a line's


def test_a_packed_call_refused_is_one_record_without_usage() -> None:
    unit = Unit([line(1, EMBEDDINGS), line(2, EMBEDDINGS)], [{"input": "a"}, {"input": "b"}])
    refused = Classification(Verdict.RETRY, "rate_limited", "slow down", sent=True)
    [record] = outcomes.call_records(unit, call(refused, 429), None, owner="w", clean=clean)
    assert (record.lines, record.usage, record.status_code) == (((1, 0), (2, 0)), None, 429)


@pytest.mark.parametrize(
    ("status", "error_class"), [(None, "timeout"), (200, "bad_body")], ids=["no answer", "cut body"]
)
def test_an_unanswered_packed_call_is_a_record_per_line(status: int | None, error_class: str) -> None:
    """What it may have cost is estimated from each line it carried (batcher.usage's unknown kind)."""
    unit = Unit([line(1, EMBEDDINGS), line(2, EMBEDDINGS)], [{"input": "a"}, {"input": "b"}])
    lost = Classification(Verdict.RETRY, error_class, "x", sent=True)
    records = outcomes.call_records(unit, call(lost, status), None, owner="w", clean=clean)
    assert [(r.request_id, r.carried) for r in records] == [(1, ()), (2, ())]


def test_a_packed_answer_that_does_not_split_is_a_value_error() -> None:
    unit = Unit([line(1, EMBEDDINGS), line(2, EMBEDDINGS)], [{"input": "a"}, {"input": "b"}])
    with pytest.raises(ValueError, match=r"\d"):
        outcomes.json_results(
            unit, call(OK, 200, orjson.dumps({"data": [{"index": 0, "embedding": [1.0]}]})), clean
        )


def test_a_failure_keeps_the_scrubbed_json_body_and_the_code() -> None:
    refused = Classification(Verdict.PERMANENT, "bad_request", f"no {KEY}", code="invalid_model", sent=True)
    body = orjson.dumps({"error": {"message": f"key {KEY} bad"}})
    result = outcomes.failure(line(), call(refused, 400, body), clean)
    assert (result.state, result.status_code, result.error_code, result.error_message) == (
        "failed",
        400,
        "invalid_model",
        "no ***",
    )
    assert KEY not in (result.response_body or "") and "***" in (result.response_body or "")
    plain = outcomes.failure(line(), call(refused, 400, b"<html>"), clean)
    assert plain.response_body is None  # not JSON: nothing to keep


def test_a_capped_line_says_to_raise_max_attempts() -> None:
    result = outcomes.capped(line(), 5)
    assert (result.state, result.error_code) == ("failed", "max_attempts")
    assert "--max-attempts" in (result.error_message or "")


def test_a_speech_answer_is_a_file_with_its_format_and_characters(tmp_path: Path) -> None:
    request = {"model": "tts", "input": "hello", "voice": "alloy", "response_format": "wav"}
    item = line(3, SPEECH, request)
    assert outcomes.audio_name(item, request) == "3.wav"
    path = tmp_path / "3.wav"
    result = outcomes.speech_result(item, request, call(OK, 200, b"RIFF"), path, clean)
    assert (result.audio_path, result.audio_bytes, result.audio_format, result.usage) == (
        str(path),
        4,
        "wav",
        Usage(characters=5),
    )
    assert outcomes.is_file_answer(Unit.single(item)) and not outcomes.is_file_answer(Unit.single(line()))


def test_answered_usage_is_the_sum_of_its_lines() -> None:
    results = [
        LineResult(1, 7, "succeeded", usage=Usage(2, 1, 3)),
        LineResult(2, 7, "succeeded", usage=Usage(5, 0, 5)),
    ]
    assert Answered(call(OK, 200), results).usage() == Usage(7, 1, 8)
    assert Answered(call(OK, 200)).usage() is None


def test_a_calls_usage_is_every_field_of_its_lines_added() -> None:
    usages = [
        Usage(2, 1, 3, 4, False, 1, 1, 2, 1, Decimal("1.5"), 1, Decimal("0.5")),
        Usage(5, 0, 5, 0, True, 0, 0, 1, 0, Decimal("2.25"), 2, Decimal(1)),
        Usage(1, 2, 3),
    ]
    results = [LineResult(i, 7, "succeeded", usage=u) for i, u in enumerate(usages)] + [
        LineResult(9, 7, "failed")
    ]
    assert outcomes.call_usage(results) == usages[0] + usages[1] + usages[2]


def test_a_result_file_is_written_whole_and_leaves_no_part_file(tmp_path: Path) -> None:
    target = write_result_file(tmp_path / "a", "b.mp3", b"data")
    assert target.read_bytes() == b"data"
    assert list(target.parent.iterdir()) == [target]


def test_call_ids_are_unique_32_hex_digits_and_a_forked_child_draws_its_own() -> None:
    ids = [outcomes.new_call_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out without pytest's teardown
        os.write(write, outcomes.new_call_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    mine = outcomes.new_call_id()
    assert len(child) == 32
    assert child[:16] != mine[:16]  # another prefix: the parent's counter could not collide with it
