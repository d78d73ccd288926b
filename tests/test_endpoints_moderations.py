"""The moderations family: validation, the estimate (no output), usage estimated, verdicts exported."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batcher.devrelay.openai_answers import moderation_answer
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.records import Usage
from workers.endpoints import family_of
from workers.endpoints.moderations import MODERATIONS

FAMILY = family_of(MODERATIONS)


def _line(body: dict[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": "m", "url": "/v1/moderations", "body": {"model": "omni"} | body})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'moderations need "input"'),
        ({"input": ""}, 'moderations need "input"'),
        ({"input": [1]}, r"input\[0\] must be a string"),
        ({"input": [{"type": "image_url", "image_url": {}}]}, r"input\[0\] is an image without a URL"),
    ],
)
def test_invalid_bodies_say_what_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(LineError, match=message):
        parse_line(_line(body), 1, ReadOptions())


def test_text_and_image_inputs_are_estimated_without_output() -> None:
    body = {
        "input": [
            {"type": "text", "text": "abcdefgh"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        ]
    }
    assert parse_line(_line(body), 1, ReadOptions()).endpoint == MODERATIONS
    assert FAMILY.prompt_tokens(body) == 2 + 765
    assert FAMILY.expected_usage(body) == Usage(prompt_tokens=767)
    assert FAMILY.reservation_tokens(body) == 767


def test_the_answer_has_no_usage_so_the_estimate_is_kept_and_flagged() -> None:
    body = {"model": "omni", "input": ["calm words", "some violence here"]}
    answer, _ = moderation_answer(body)
    parsed = FAMILY.parse(body, orjson.dumps(answer))
    assert parsed.usage == Usage(FAMILY.prompt_tokens(body), 0, FAMILY.prompt_tokens(body), estimated=True)
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == "not flagged; flagged: violence"
    assert FAMILY.answer_text({}) is None
