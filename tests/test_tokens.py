"""The token estimate, pinned by hand-computed tables (no tokenizer download)."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.endpoints import Endpoint
from workers.tokens import (
    estimate_prompt_tokens,
    estimate_text_tokens,
    expected_completion_tokens,
    reservation_tokens,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("hello world!", 3),  # 12 ASCII characters / 4
        ("你好世界", 4),  # one token a CJK character
        ("hi 你好", 3),  # ceil(3/4) = 1, plus 2
        ("héllo", 2),  # ceil(4/4) = 1, plus 1 for é
    ],
)
def test_estimate_text_tokens_table(text: str, expected: int) -> None:
    assert estimate_text_tokens(text) == expected


CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hello world!"}]}, 3 + 4 + 3),
        (
            CHAT,
            {"messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "你好"}]},
            3 + 4 + 1 + 4 + 2,
        ),
        (
            CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {}}],
                    }
                ]
            },
            3 + 4 + 1 + 765,
        ),
        (CHAT, {"messages": [{"role": "assistant", "content": None, "tool_calls": []}]}, 3 + 4),
        ("/v1/completions", {"prompt": "abcdefgh"}, 2),
        ("/v1/completions", {"prompt": ["abcd", "abcd"]}, 2),
        ("/v1/completions", {"prompt": [1, 2, 3]}, 3),
        ("/v1/embeddings", {"input": [[1, 2], [3, 4, 5]]}, 5),
        ("/v1/embeddings", {"input": "你好 abcd"}, 2 + 2),
        ("/v1/audio/speech", {"input": "你好, world"}, 9),  # characters: TTS is billed so
    ],
)
def test_estimate_prompt_tokens_table(endpoint: str, body: dict[str, Any], expected: int) -> None:
    assert estimate_prompt_tokens(Endpoint(endpoint), body) == expected


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (CHAT, {}, 256),
        (CHAT, {"max_tokens": 100}, 100),
        (CHAT, {"max_tokens": 100, "max_completion_tokens": 40}, 40),
        (CHAT, {"max_tokens": 100, "n": 3}, 300),
        ("/v1/completions", {"max_tokens": 10, "n": 2, "best_of": 5}, 50),
        ("/v1/embeddings", {"max_tokens": 10}, 0),
        ("/v1/audio/speech", {}, 0),
        (CHAT, {"max_tokens": True}, 256),  # a boolean is not a number of tokens
    ],
)
def test_expected_completion_tokens_table(endpoint: str, body: dict[str, Any], expected: int) -> None:
    assert expected_completion_tokens(Endpoint(endpoint), body) == expected


def test_reservation_is_prompt_plus_expected_completion() -> None:
    body = {"messages": [{"role": "user", "content": "hello world!"}], "max_tokens": 50}
    assert reservation_tokens(Endpoint(CHAT), body) == 10 + 50
