"""Gemini native embeddings: embedContent and batchEmbedContents lines, estimate, vectors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batcher.devrelay.gemini_answers import gemini_embed_answer, gemini_embedding
from batcher.reader import LineError, ReadOptions, parse_line
from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints import family_of

SINGLE = "/v1beta/models/text-embedding-004:embedContent"
BATCH = "/v1beta/models/text-embedding-004:batchEmbedContents"
FAMILY = family_of(Endpoint(SINGLE))
CONTENT = {"parts": [{"text": "abcdefgh"}]}


def _line(url: str, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": "e", "url": url, "body": body})


def test_both_routes_are_the_embedding_family_with_the_model_from_the_path() -> None:
    assert family_of(Endpoint(BATCH)) is FAMILY and FAMILY.name == "gemini_embed"
    line = parse_line(
        _line(BATCH, {"requests": [{"model": "models/text-embedding-004", "content": CONTENT}]}),
        1,
        ReadOptions(),
    )
    assert line.model == "text-embedding-004"


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        (SINGLE, {}, 'embedContent needs "content"'),
        (SINGLE, {"content": {"parts": []}}, 'content needs "parts"'),
        (BATCH, {"requests": []}, 'batchEmbedContents needs "requests"'),
        (BATCH, {"requests": [{"content": 1}]}, r"requests\[0\].content must be an object"),
    ],
)
def test_invalid_bodies_say_what_to_fix(url: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(LineError, match=message):
        parse_line(_line(url, body), 1, ReadOptions())


def test_no_usage_comes_back_so_the_estimate_is_kept_and_flagged() -> None:
    body = {"requests": [{"content": CONTENT}, {"content": CONTENT}]}
    assert FAMILY.expected_usage(body) == Usage(prompt_tokens=4)
    answer, _ = gemini_embed_answer("batchEmbedContents", body)
    parsed = FAMILY.parse(body, orjson.dumps(answer))
    assert parsed.usage == Usage(4, 0, 4, estimated=True)
    assert FAMILY.vectors(orjson.loads(parsed.body_json)) == [gemini_embedding(CONTENT)] * 2
    single, _ = gemini_embed_answer("embedContent", {"content": CONTENT})
    assert FAMILY.vectors(single) == [gemini_embedding(CONTENT)]
