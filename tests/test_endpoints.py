"""Endpoint families: the registry, one estimate everywhere, answers parsed, and a family added by a test.

The last test follows the README recipe "Adding an endpoint family": a family of its own,
registered from the test, is what the reader, the estimate, the limiter's reservation and the
exports use, without a change to any of them.
"""

from __future__ import annotations

import base64
import re
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from batcher.estimate import line_usage, output_tokens
from batcher.export import csv_row
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.endpoints import Endpoint
from jobs.errors import UnknownEndpoint
from jobs.records import ResultLine, Usage
from workers.budget import Budget
from workers.endpoints import (
    BodyError,
    Family,
    ParsedAnswer,
    by_path,
    families,
    family_of,
    override,
    registry,
    route_list,
)
from workers.endpoints.chat import CHAT
from workers.endpoints.completions import COMPLETIONS
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.speech import SPEECH
from workers.prices import ListPrice, PriceBook
from workers.tokens import estimate_prompt_tokens, expected_completion_tokens, reservation_tokens


def test_every_endpoint_has_a_family_found_by_its_path() -> None:
    names = [f.name for f in families()]
    assert {"chat", "completions", "embeddings", "speech"} <= set(names)
    assert names == sorted(names)
    for family in families():
        for path in family.paths:
            assert by_path(path) is family_of(Endpoint(path)) is family
    assert by_path("/v1/chat") is None
    assert by_path("https://evil.example/v1/chat/completions") is None


def test_a_route_no_family_serves_is_a_clear_error() -> None:
    with pytest.raises(UnknownEndpoint, match="no endpoint family serves /v1/nope; routes served: "):
        family_of(Endpoint("/v1/nope"))


def test_a_family_is_found_by_defining_it_in_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a family is one module: the registry finds every Family subclass of the package."""
    package = tmp_path / "more_families"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("from workers.endpoints.base import Family\n")  # skipped by name
    (package / "echo.py").write_text(
        "from workers.endpoints.base import Family\n"
        "class Helper:\n    pass\n"
        "class Echo(Family):\n    paths = ('/v1/echo',)\n    name = 'echo'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = registry._discover("more_families")
    assert [(f.name, f.paths) for f in found] == [("echo", ("/v1/echo",))]


class Gemini(Family):
    """A test-only family with patterned routes: the model is part of the path."""

    name: ClassVar[str] = "patterned"

    def accepts(self, path: str) -> bool:
        return re.fullmatch(r"/v1beta/models/[A-Za-z0-9.-]+:generateContent", path) is not None

    def route_names(self) -> tuple[str, ...]:
        return ("/v1beta/models/{model}:generateContent",)


def test_a_patterned_family_takes_the_routes_it_accepts_and_only_those() -> None:
    with override(Gemini()) as family:
        assert by_path("/v1beta/models/gemini-2.5-pro:generateContent") is family
        assert by_path("/v1beta/models/../x:generateContent") is None
        assert "/v1beta/models/{model}:generateContent" in route_list()
        assert by_path("/v1/chat/completions") is family_of(CHAT)  # the others still answer
    assert by_path("/v1beta/models/gemini-2.5-pro:generateContent") is not family  # the real one is back


@pytest.mark.parametrize(
    ("endpoint", "body", "completion"),
    [
        (CHAT, {"max_tokens": 100, "n": 3}, 300),
        (COMPLETIONS, {"max_tokens": 10, "n": 2, "best_of": 5}, 50),  # best_of are all billed
        (COMPLETIONS, {"max_tokens": 10, "best_of": 3}, 30),
        (CHAT, {"max_tokens": 10, "n": True}, 10),  # a boolean is not a count
        (EMBEDDINGS, {"input": "x", "max_tokens": 10}, 0),
    ],
)
def test_estimate_budget_and_limiter_count_one_way(
    endpoint: Endpoint, body: dict[str, Any], completion: int
) -> None:
    """Regression: `batcher estimate` ignored best_of and took True for a count."""
    assert output_tokens(endpoint, body, None) == completion
    assert expected_completion_tokens(endpoint, body) == completion
    assert family_of(endpoint).expected_usage(body).completion_tokens == completion


def test_a_boolean_limit_is_no_limit_for_the_estimate() -> None:
    """Regression: `max_tokens: true` was estimated as 1 token of output."""
    assert output_tokens(CHAT, {"max_tokens": True}, None) is None
    assert output_tokens(CHAT, {"max_tokens": True}, 200) == 200


def _json(answer: dict[str, Any]) -> bytes:
    return orjson.dumps(answer)


@pytest.mark.parametrize(
    ("endpoint", "request_body", "answer", "usage"),
    [
        (
            CHAT,
            {"messages": [{"role": "user", "content": "hi"}]},
            {
                "choices": [{"message": {"content": "ok"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            },
            Usage(5, 2, 7),
        ),
        (  # no usage: estimated from the request and the answer's text, and flagged
            CHAT,
            {"messages": [{"role": "user", "content": "abcd"}]},
            {"choices": [{"message": {"content": "abcdefgh"}}]},
            Usage(3 + 4 + 1, 2, 3 + 4 + 1 + 2, estimated=True),
        ),
        (  # zero usage is missing usage
            COMPLETIONS,
            {"prompt": "abcd"},
            {"choices": [{"text": "abcd"}], "usage": {"prompt_tokens": 0, "completion_tokens": 0}},
            Usage(1, 1, 2, estimated=True),
        ),
        (
            EMBEDDINGS,
            {"input": "abcdefgh"},
            {"data": [{"embedding": [0.5]}]},
            Usage(2, 0, 2, estimated=True),
        ),
    ],
)
def test_parse_gives_body_and_usage(
    endpoint: Endpoint, request_body: dict[str, Any], answer: dict[str, Any], usage: Usage
) -> None:
    parsed = family_of(endpoint).parse(request_body, _json(answer))
    assert parsed.usage == usage
    assert orjson.loads(parsed.body_json)["choices" if "choices" in answer else "data"]


def test_base64_embeddings_are_stored_as_their_float32_bytes() -> None:
    raw = struct.pack("<2f", 0.5, -1.0)
    answer = {"data": [{"embedding": base64.b64encode(raw).decode()}], "usage": {"prompt_tokens": 1}}
    parsed = family_of(EMBEDDINGS).parse({"input": "x"}, _json(answer))
    assert parsed.vectors is not None
    assert (parsed.vectors.data, parsed.vectors.dim, parsed.vectors.encoding) == (raw, 2, "base64")
    assert orjson.loads(parsed.body_json)["data"] == [{}]  # the body keeps no vector text


@pytest.mark.parametrize(
    ("endpoint", "answer", "text", "vectors"),
    [
        (CHAT, {"choices": [{"message": {"content": "hi"}}, {"message": {"content": "x"}}]}, "hi", []),
        (COMPLETIONS, {"choices": [{"text": "done"}]}, "done", []),
        (EMBEDDINGS, {"data": [{"embedding": [1.0, 2.0]}, {"embedding": [3.0, 4.0]}]}, None,
         [[1.0, 2.0], [3.0, 4.0]]),
    ],
)  # fmt: skip
def test_what_exports_show(
    endpoint: Endpoint, answer: dict[str, Any], text: str | None, vectors: list[Any]
) -> None:
    family = family_of(endpoint)
    assert (family.answer_text(answer), family.vectors(answer)) == (text, vectors)


def test_speech_answers_are_files_billed_per_character() -> None:
    speech = family_of(SPEECH)
    request = {"input": "你好, world", "voice": "alloy", "response_format": "wav"}
    assert speech.binary_answer
    assert (speech.file_format(request), speech.file_format({"input": "x"})) == ("wav", "mp3")
    assert speech.file_usage(request) == Usage(characters=9)
    assert speech.expected_usage(request) == Usage(characters=9)
    with pytest.raises(NotImplementedError):
        family_of(CHAT).file_format(request)


# --- the recipe: a family of a test's own -----------------------------------------------------


class Shout(Family):
    """A test-only family: ``{"say": TEXT}`` in, ``{"echo": TEXT}`` out, ten tokens a word."""

    paths: ClassVar[tuple[str, ...]] = (COMPLETIONS.path,)  # the path it answers for, in this test
    name: ClassVar[str] = "shout"

    def check(self, body: Any) -> None:
        if not isinstance(body.get("say"), str):
            raise BodyError('shout needs "say", the text to shout')

    def prompt_tokens(self, body: Any) -> int:
        return 10 * len(str(body.get("say", "")).split())

    def completion_tokens(self, body: Any, *, default: int | None = 256) -> int | None:
        return 1

    def parse(self, request: Any, content: bytes) -> ParsedAnswer:
        answer = orjson.loads(content)
        return ParsedAnswer(orjson.dumps(answer).decode(), Usage(3, 1, 4))

    def answer_text(self, answer: Any) -> str | None:
        return str(answer.get("echo", "")).upper()


def _line(body: dict[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": "a", "url": "/v1/completions", "body": {"model": "m"} | body})


def test_a_family_registered_by_a_test_is_what_every_stage_uses() -> None:
    with override(Shout()):
        with pytest.raises(LineError, match='shout needs "say"'):
            parse_line(_line({"prompt": "a valid completions body"}), 1, ReadOptions())
        line = parse_line(_line({"say": "two words"}), 1, ReadOptions())
        assert line.endpoint == COMPLETIONS
        assert estimate_prompt_tokens(line.endpoint, line.body) == 20
        assert reservation_tokens(line.endpoint, line.body) == 21
        usage, has_max = line_usage(line, None, estimate_prompt_tokens)
        assert (usage, has_max) == (Usage(prompt_tokens=20, completion_tokens=1), True)
        book = PriceBook(prices={"m": ListPrice(input=Decimal(1), output=Decimal(1))})
        budget = Budget(Decimal(1), book, group=None, recorded=list)
        assert budget.estimate(line.endpoint, "m", [line.body]) == Decimal(21) / Decimal(1_000_000)
        parsed = family_of(line.endpoint).parse(line.body, b'{"echo": "two words"}')
        row = ResultLine(
            id=1, custom_id="a", line_no=1, state="succeeded", endpoint=line.endpoint.path, model="m",
            status_code=200, upstream_request_id=None, response_body=parsed.body_json, audio_path=None,
            audio_format=None, audio_bytes=None, prompt_tokens=3, completion_tokens=1, total_tokens=4,
            characters=None, usage_estimated=False, latency_ms=1, attempts=1, error_code=None,
            last_error=None, cached=False, provider=None, vectors=None,
        )  # fmt: skip
        assert csv_row(row)[5] == "TWO WORDS"
    assert family_of(COMPLETIONS).name == "completions"  # the real one is back


@pytest.mark.parametrize(
    ("path", "base", "url"),
    [
        ("/v1/chat/completions", "https://relay.example/v1", "https://relay.example/v1/chat/completions"),
        ("/v1/embeddings", "https://relay.example/v1/", "https://relay.example/v1/embeddings"),
        ("/v1/embeddings", "https://relay.example/openai/v1", "https://relay.example/openai/v1/embeddings"),
        # native and task routes hang off the relay's root, not the API version
        ("/mj/submit/imagine", "https://relay.example/v1", "https://relay.example/mj/submit/imagine"),
        (
            "/v1beta/models/gemini-2.5-pro:generateContent",
            "https://relay.example/v1",
            "https://relay.example/v1beta/models/gemini-2.5-pro:generateContent",
        ),
    ],
)
def test_a_route_goes_below_the_base_url_or_the_relay_root(path: str, base: str, url: str) -> None:
    assert Endpoint(path).url_under(base) == url
