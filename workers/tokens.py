"""Token estimates before a call, for the TPM limiter and cost estimates.

No tokenizer is downloaded: tiktoken fetches its encodings from the network on first use, which
batcher must never do. The documented estimate instead: ASCII text counts one token per four
characters (rounded up), and every other character one token. English BPE averages about four
characters a token; CJK text is about one token a character; other scripts and emoji are
overestimated. Overestimating is the safe side for a rate limiter, and the reservation is
reconciled with the real usage after each call anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MESSAGE_OVERHEAD = 4  # role and separators of each chat message
REPLY_PRIMING = 3  # the tokens that start the assistant's reply
IMAGE_TOKENS = 765  # a high-detail 512×512 tile set, as OpenAI counts an image
DEFAULT_COMPLETION = 256


def estimate_text_tokens(text: str) -> int:
    """Tokens in a text by the rule above: ceil(ASCII chars / 4) + other chars."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(_part_tokens(part) for part in content)
    return 0


def _part_tokens(part: Any) -> int:
    if isinstance(part, str):
        return estimate_text_tokens(part)
    if not isinstance(part, dict):
        return 0
    if part.get("type") in ("image_url", "image", "input_image"):
        return IMAGE_TOKENS
    text = part.get("text")
    return estimate_text_tokens(text) if isinstance(text, str) else 0


def _prompt_like(value: Any) -> int:
    """A prompt or embedding input: a string, strings, a token list, or token lists."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if not isinstance(value, list):
        return 0
    if all(isinstance(x, int) for x in value):
        return len(value)
    return sum(_prompt_like(x) for x in value)


def _chat_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    total = REPLY_PRIMING
    for message in messages:
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    return total


def estimate_prompt_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request (characters of the input for speech, which is billed so)."""
    if endpoint == "/v1/chat/completions":
        return _chat_tokens(body)
    if endpoint == "/v1/completions":
        return _prompt_like(body.get("prompt"))
    if endpoint == "/v1/embeddings":
        return _prompt_like(body.get("input"))
    if endpoint == "/v1/audio/speech":
        text = body.get("input")
        return len(text) if isinstance(text, str) else 0
    return 0


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def expected_completion_tokens(
    endpoint: str, body: Mapping[str, Any], *, default: int = DEFAULT_COMPLETION
) -> int:
    """The completion tokens to expect: ``max_completion_tokens``/``max_tokens`` × choices."""
    if endpoint not in ("/v1/chat/completions", "/v1/completions"):
        return 0
    limit = (
        _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens")) or default
    )
    choices = _positive_int(body.get("n")) or 1
    if endpoint == "/v1/completions":
        choices = max(choices, _positive_int(body.get("best_of")) or 1)
    return limit * choices


def reservation_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """What a TPM limiter reserves before the call: prompt estimate + expected completion."""
    return estimate_prompt_tokens(endpoint, body) + expected_completion_tokens(endpoint, body)
