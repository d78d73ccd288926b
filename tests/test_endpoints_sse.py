"""Streamed answers: events read from a body, assembled per family into the non-streamed answer.

Each family's stream, as the stand-in relay sends it (``batcher.devrelay.streams``), must give
back the very answer a non-streamed call gets; a stream cut before its end marker is ``StreamCut``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from batcher.devrelay.answers import chat_answer, completion_answer
from batcher.devrelay.claude_answers import claude_answer
from batcher.devrelay.gemini_answers import gemini_answer
from batcher.devrelay.openai_answers import responses_answer
from batcher.devrelay.streams import cut, overloaded, stream_of
from jobs.endpoints import Endpoint
from workers.endpoints import family_of
from workers.endpoints.sse import StreamCut, classify_stream, events
from workers.retry import Throttle, Verdict

GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
CHAT_BODY = {"model": "m", "stream": True, "n": 2, "messages": [{"role": "user", "content": "hello there"}]}
CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], tuple[dict[str, Any], Any]]]] = [
    ("/v1/chat/completions", CHAT_BODY, chat_answer),
    ("/v1/completions", {"model": "m", "stream": True, "prompt": "say something"}, completion_answer),
    ("/v1/responses", {"model": "m", "stream": True, "input": "tell me", "reasoning": {}}, responses_answer),
    (
        "/v1/messages",
        {"model": "c", "stream": True, "max_tokens": 9, "messages": [{"role": "user", "content": "a b c"}]},
        claude_answer,
    ),
    (
        GEMINI_STREAM,
        {"contents": [{"parts": [{"text": "x y"}]}]},
        lambda b: gemini_answer("gemini-2.5-flash", b),
    ),
]


def _without_logprobs(answer: dict[str, Any]) -> dict[str, Any]:
    choices = [{k: v for k, v in c.items() if k != "logprobs"} for c in answer.get("choices", [])]
    return answer | ({"choices": choices} if "choices" in answer else {})


@pytest.mark.parametrize(("path", "body", "build"), CASES, ids=[c[0] for c in CASES])
def test_a_stream_assembles_into_the_answer_a_plain_call_gets(
    path: str, body: dict[str, Any], build: Callable[[dict[str, Any]], tuple[dict[str, Any], Any]]
) -> None:
    plain, _ = build(body)
    family = family_of(Endpoint(path))
    assert family.streamed(body)
    stream = stream_of(path.split("?", maxsplit=1)[0], plain)
    parsed = family.parse(body, stream)
    assert _without_logprobs(orjson.loads(parsed.body_json)) == _without_logprobs(plain)
    assert parsed.usage == family.parse({}, orjson.dumps(plain)).usage
    assert not parsed.usage.estimated
    with pytest.raises(StreamCut):
        family.parse(body, cut(stream))


def test_a_relay_that_ignores_stream_true_still_parses() -> None:
    plain, _ = chat_answer(CHAT_BODY)
    parsed = family_of(Endpoint("/v1/chat/completions")).parse(CHAT_BODY, orjson.dumps(plain))
    assert orjson.loads(parsed.body_json)["choices"] == plain["choices"]


def test_tool_calls_and_errors_in_a_chat_stream() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return (
            b"data: "
            + orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + b"\n\n"
        )

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    stream = chunk({"role": "assistant", "tool_calls": [call]}) + chunk(
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls"
    )
    family = family_of(Endpoint("/v1/chat/completions"))
    answer = family.assemble(stream + b"data: [DONE]\n\n")
    tool = answer["choices"][0]["message"]["tool_calls"][0]
    assert (tool["id"], tool["function"]) == ("call_1", {"name": "f", "arguments": '{"a": 1}'})
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    broken = stream + b'data: {"error": {"message": "upstream died"}}\n\ndata: [DONE]\n\n'
    with pytest.raises(StreamCut, match="upstream died"):
        family.assemble(broken)


def test_events_read_names_multiline_data_and_crlf() -> None:
    found = events(b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\n: comment\n\ndata: x\n\n")
    assert [(e.name, e.data) for e in found] == [("a", "1\n2"), ("", "x")]


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, b"data: {}\n\n", Verdict.OK),
        (200, b'{"error": {"message": "rate limit", "code": "rate_limit"}}', Verdict.RETRY),
        (200, b"", Verdict.RETRY),
        (400, b'{"error": {"message": "bad"}}', Verdict.PERMANENT),
    ],
)
def test_a_streamed_call_is_classified_on_its_body(status: int, body: bytes, verdict: Verdict) -> None:
    assert classify_stream(status, {}, body, now=0).verdict == verdict


@pytest.mark.parametrize(("path", "body", "answer"), CASES)
def test_an_overload_event_mid_stream_is_a_bad_body_that_waits(
    path: str, body: dict[str, Any], answer: Callable[[dict[str, Any]], tuple[dict[str, Any], Any]]
) -> None:
    """Claude's ``event: error``, Gemini's UNAVAILABLE, new-api's error chunk before [DONE]: never OK."""
    broken = overloaded(path.partition("?")[0], stream_of(path, answer(body)[0]))
    c = classify_stream(200, {}, broken, now=0)
    assert (c.verdict, c.error_class, c.throttle, c.sent) == (
        Verdict.RETRY,
        "bad_body",
        Throttle.OVERLOAD,
        True,
    )
    assert "overloaded" in c.message.lower() and not c.counts_attempt


@pytest.mark.parametrize(
    ("event", "code", "throttle"),
    [
        (b'event: error\ndata: {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}',
         "rate_limit_error", Throttle.RATE),
        (b'data: {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}',
         "RESOURCE_EXHAUSTED", Throttle.RATE),
        (b'event: error\ndata: {"type": "error", "code": "server_error", "message": "boom"}', "server_error", None),
        (b'data: {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "x"}}}',
         "server_error", None),
        (b"event: error\ndata: upstream went away", None, None),
    ],
)  # fmt: skip
def test_error_events_mid_stream_are_retried(
    event: bytes, code: str | None, throttle: Throttle | None
) -> None:
    stream = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "half"}}]}\n\n'
        + event
        + b"\n\ndata: [DONE]\n\n"
    )
    c = classify_stream(200, {}, stream, now=0)
    assert (c.verdict, c.error_class, c.code, c.throttle) == (Verdict.RETRY, "bad_body", code, throttle)


def test_a_stream_without_error_events_is_ok() -> None:
    stream = stream_of("/v1/messages", claude_answer(CASES[3][1])[0])
    assert classify_stream(200, {}, stream, now=0).verdict == Verdict.OK
