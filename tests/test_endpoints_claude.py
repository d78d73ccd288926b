"""Claude native: validation, the estimate, the headers sent (only to the relay), cache usage priced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from batcher.devrelay.claude_answers import claude_answer, expected_claude_text
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.records import Usage
from jobs.settings import load_settings
from workers.client import ApiClient, RawResponse, client_config
from workers.cost import list_cost, relay_cost
from workers.endpoints import family_of
from workers.endpoints.claude import MESSAGES, claude_usage
from workers.prices import ListPrice, RelayPrice

FAMILY = family_of(MESSAGES)
KEY = "sk-claude-test-0123456789"


def _line(body: dict[str, Any]) -> bytes:
    base = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps({"custom_id": "c", "url": "/v1/messages", "body": base | body})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": None}, 'need "max_tokens"'),
        ({"max_tokens": True}, 'need "max_tokens"'),
        ({"messages": []}, 'need "messages"'),
        ({"messages": [{"role": "system", "content": "x"}]}, r'messages\[0\]."role" must be "user" or "assistant"'),
        ({"messages": [{"role": "user", "content": ""}]}, r'messages\[0\] needs "content"'),
        ({"system": 3}, '"system" must be a string'),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
            r"messages\[0\].content\[0\] is an image without a URL",
        ),
    ],
)  # fmt: skip
def test_invalid_bodies_say_what_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(LineError, match=message):
        parse_line(_line(body), 1, ReadOptions())


def test_the_estimate_counts_system_and_messages_and_max_tokens() -> None:
    line = parse_line(_line({"system": [{"type": "text", "text": "abcd"}]}), 1, ReadOptions())
    assert FAMILY.prompt_tokens(line.body) == 1 + 4 + 1
    assert FAMILY.completion_tokens(line.body) == 100


def test_usage_counts_cache_reads_and_writes_as_parts_of_the_prompt() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 7,
    }
    assert claude_usage(usage) == Usage(
        160, 7, 167, cached_tokens=100, cache_write_tokens=50, cache_write_1h_tokens=20
    )
    assert claude_usage({"input_tokens": 0, "output_tokens": 0}) is None
    assert claude_usage(None) is None


def test_cache_tokens_are_priced_at_their_own_rates() -> None:
    usage = Usage(160, 7, 167, cached_tokens=100, cache_write_tokens=50, cache_write_1h_tokens=20)
    price = ListPrice(
        input=Decimal(3),
        output=Decimal(15),
        cached=Decimal("0.3"),
        cache_write=Decimal("3.75"),
        cache_write_1h=Decimal(6),
    )
    expected = (10 * 3 + 100 * Decimal("0.3") + 30 * Decimal("3.75") + 20 * 6 + 7 * 15) / Decimal(1_000_000)
    assert list_cost(usage, price) == expected
    ratios = RelayPrice(
        model_ratio=Decimal(1), cache_ratio=Decimal("0.1"), cache_creation_ratio=Decimal("1.25"),
        cache_creation_1h_ratio=Decimal(2),
    )  # fmt: skip
    # quota = ceil(10 + 100×0.1 + 30×1.25 + 20×2 + 7) = ceil(104.5) = 105
    assert relay_cost(usage, ratios) == Decimal(105) / 500_000


async def test_calls_carry_anthropic_version_and_the_key_as_x_api_key_and_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"content": []})

    settings = load_settings(base_url="https://relay.example/v1", api_key=KEY, anthropic_version="2024-01-01")
    async with ApiClient(client_config(settings), transport=httpx.MockTransport(handler)) as client:
        answer = await client.send(MESSAGES, FAMILY.request(b"{}"))
        assert isinstance(answer, RawResponse)
        await client.send(MESSAGES, FAMILY.request(b"{}"))  # the headers are built once, then kept
    request = seen[0]
    assert str(request.url) == "https://relay.example/v1/messages"
    assert request.headers["anthropic-version"] == "2024-01-01"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert seen[1].headers["x-api-key"] == KEY
    default = client_config(load_settings(base_url="https://relay.example/v1"))
    async with ApiClient(default, transport=httpx.MockTransport(handler)) as client:
        await client.send(MESSAGES, FAMILY.request(b"{}"))
    assert seen[2].headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in seen[2].headers  # no key configured: none sent


def test_the_stand_in_relays_answer_parses_to_its_own_usage() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "long cached system", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "one two", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "four five six"},
            ]},
        ],
    }  # fmt: skip
    answer, served = claude_answer(body)
    parsed = FAMILY.parse(body, orjson.dumps(answer))
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == expected_claude_text(body)
    assert parsed.usage == Usage(
        served["prompt_tokens"], served["completion_tokens"], served["total_tokens"],
        cached_tokens=3, cache_write_tokens=3, cache_write_1h_tokens=2,
    )  # fmt: skip
