"""Gemini native generateContent: the strict route with its model, validation, estimate, usage, key."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from batcher.devrelay.gemini_answers import expected_gemini_text, gemini_answer
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.endpoints import Endpoint
from jobs.records import Usage
from jobs.settings import load_settings
from workers.client import ApiClient, client_config
from workers.endpoints import by_path, family_of, route_list
from workers.endpoints.gemini import gemini_usage

ROUTE = "/v1beta/models/gemini-2.5-flash:generateContent"
FAMILY = family_of(Endpoint(ROUTE))
BODY = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def _line(url: str, body: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"custom_id": "g", "url": url, "body": BODY if body is None else body})


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/../x:generateContent",
        "/v1beta/models/a..b:generateContent",
        "/v1beta/models/gemini-2.5-flash:generateContent?key=x",
        "/v1beta/models/gemini/x:generateContent",
        "/v1beta/models/:generateContent",
        "https://evil.example/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:deleteEverything",
        "/v1beta/models/gemini-2.5-flash:generateContent/x",
    ],
)
def test_the_route_is_strict(path: str) -> None:
    assert by_path(path) is None
    with pytest.raises(LineError, match=r"/v1beta/models/\{model\}:generateContent"):
        parse_line(_line(path), 1, ReadOptions())


def test_the_model_comes_from_the_path_and_the_body_is_left_as_it_is() -> None:
    line = parse_line(_line(ROUTE), 1, ReadOptions())
    assert (line.model, line.endpoint.path, family_of(line.endpoint).name) == (
        "gemini-2.5-flash",
        ROUTE,
        "gemini",
    )
    assert "model" not in line.body  # Gemini refuses unknown fields
    assert "/v1beta/models/{model}:generateContent" in route_list()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'Gemini needs "contents"'),
        ({"contents": [{"role": "user"}]}, r'contents\[0\] needs "parts"'),
        ({"contents": [{"parts": [3]}]}, r"contents\[0\].parts\[0\] must be an object"),
        ({"contents": BODY["contents"], "systemInstruction": "x"}, "systemInstruction must be an object"),
    ],
)
def test_invalid_bodies_say_what_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(LineError, match=message):
        parse_line(_line(ROUTE, body), 1, ReadOptions())


def test_the_estimate_counts_parts_and_max_output_tokens_times_candidates() -> None:
    body = BODY | {"generationConfig": {"maxOutputTokens": 40, "candidateCount": 2}}
    assert FAMILY.prompt_tokens(body) == 4 + 3
    assert FAMILY.completion_tokens(body) == 80
    image = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA" * 10_000}}]}]}
    assert FAMILY.prompt_tokens(image) == 4 + 258  # a tile, not the base64's length


def test_usage_metadata_is_read_as_new_api_bills_it() -> None:
    meta = {
        "promptTokenCount": 10,
        "toolUsePromptTokenCount": 2,
        "candidatesTokenCount": 5,
        "thoughtsTokenCount": 3,
        "cachedContentTokenCount": 4,
        "totalTokenCount": 20,
    }
    assert gemini_usage(meta) == Usage(12, 8, 20, cached_tokens=4, reasoning_tokens=3)
    assert gemini_usage({"promptTokenCount": 0}) is None


def test_the_stand_in_relays_answer_parses_to_its_own_usage() -> None:
    body = BODY | {
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 10}},
        "cachedContent": "cachedContents/x",
    }
    answer, served = gemini_answer("gemini-2.5-flash", body)
    parsed = FAMILY.parse(body, orjson.dumps(answer))
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == expected_gemini_text(body)
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (
        served["prompt_tokens"],
        served["completion_tokens"],
    )
    assert (parsed.usage.reasoning_tokens, parsed.usage.cached_tokens) == (3, 1)


async def test_the_key_goes_as_x_goog_api_key_below_the_relays_root() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    settings = load_settings(base_url="https://relay.example/v1", api_key="sk-gem-123456789")
    async with ApiClient(client_config(settings), transport=httpx.MockTransport(handler)) as client:
        await client.send(Endpoint(ROUTE), FAMILY.request(b"{}"))
    assert str(seen[0].url) == "https://relay.example" + ROUTE
    assert seen[0].headers["x-goog-api-key"] == "sk-gem-123456789"
