"""The Responses family: validation, the estimate, usage with its cached and reasoning parts, text."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batcher.devrelay.openai_answers import expected_output_text, responses_answer
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.records import Usage
from workers.endpoints import family_of
from workers.endpoints.responses import RESPONSES, output_text, responses_usage

FAMILY = family_of(RESPONSES)


def _line(body: dict[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": "r", "url": "/v1/responses", "body": {"model": "gpt-4.1"} | body})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'responses need "input"'),
        ({"input": ""}, 'responses need "input"'),
        ({"input": []}, 'responses need "input"'),
        ({"input": [3]}, r"input\[0\] must be an object"),
        ({"input": [{"role": "user", "content": 5}]}, r'input\[0\]."content" must be a string'),
        ({"input": [{"foo": 1}]}, r'input\[0\] needs a "role"'),
        ({"input": "hi", "instructions": 1}, '"instructions" must be a string'),
    ],
)
def test_invalid_bodies_say_what_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(LineError, match=message):
        parse_line(_line(body), 1, ReadOptions())


def test_valid_bodies_pass() -> None:
    for body in (
        {"input": "hello"},
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]},
        {"input": [{"type": "function_call_output", "call_id": "c", "output": "{}"}]},
    ):
        assert parse_line(_line(body), 1, ReadOptions()).endpoint == RESPONSES


def test_the_estimate_counts_instructions_input_and_max_output_tokens() -> None:
    body = {"instructions": "abcd", "input": "abcdefgh", "max_output_tokens": 50}
    assert FAMILY.prompt_tokens(body) == 1 + 4 + 2
    assert FAMILY.completion_tokens(body) == 50
    assert FAMILY.completion_tokens({"input": "x"}, default=None) is None


def test_usage_keeps_cached_and_reasoning_parts() -> None:
    answer = {
        "usage": {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 40},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 12},
            "total_tokens": 130,
        }
    }
    assert responses_usage(answer) == Usage(100, 30, 130, cached_tokens=40, reasoning_tokens=12)
    parsed = FAMILY.parse({"input": "x"}, orjson.dumps(answer))
    assert parsed.usage == Usage(100, 30, 130, cached_tokens=40, reasoning_tokens=12)


@pytest.mark.parametrize("usage", [None, {}, {"input_tokens": 0, "output_tokens": 0}, {"prompt_tokens": 3}])
def test_missing_or_zero_usage_is_estimated_and_flagged(usage: Any) -> None:
    answer: dict[str, Any] = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "abcd"}]}]
    }
    if usage is not None:
        answer["usage"] = usage
    parsed = FAMILY.parse({"input": "abcdefgh"}, orjson.dumps(answer))
    assert parsed.usage == Usage(4 + 2, 1, 7, estimated=True)


def test_the_export_shows_the_output_text() -> None:
    answer = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "a"}, {"type": "refusal"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "b"}]},
        ]
    }
    assert output_text(answer) == FAMILY.answer_text(answer) == "ab"
    assert FAMILY.answer_text({"output_text": "given"}) == "given"
    assert FAMILY.answer_text({}) is None


def test_the_stand_in_relays_answer_parses_to_its_own_usage() -> None:
    body = {"model": "m", "input": "one two three", "prompt_cache_key": "k", "reasoning": {"effort": "low"}}
    answer, served = responses_answer(body)
    parsed = FAMILY.parse(body, orjson.dumps(answer))
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == expected_output_text(body)
    assert parsed.usage.prompt_tokens == served["prompt_tokens"] == 3
    assert parsed.usage.cached_tokens == 1
    assert parsed.usage.reasoning_tokens == 2
    assert parsed.usage.completion_tokens == served["completion_tokens"]
