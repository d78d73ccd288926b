"""Claude native (``/v1/messages``): Anthropic's Messages API, as new-api relays pass it through.

Sent with ``anthropic-version`` (``BATCHER_ANTHROPIC_VERSION``, default ``2023-06-01``) and the
key both as ``x-api-key`` and as ``Authorization: Bearer`` (relays accept either; Anthropic
itself reads ``x-api-key``). ``max_tokens`` is required, as the API requires it.

Usage follows Anthropic's semantics, where ``input_tokens`` leaves the cache out: batcher's
prompt tokens are ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``, of
which the read ones are ``cached_tokens`` and the written ones ``cache_write_tokens`` (the hour-long
part, ``cache_creation.ephemeral_1h_input_tokens``, is ``cache_write_1h_tokens``), so each is
priced at its own rate (``workers.cost``). Anthropic's error envelope
``{"type": "error", "error": {"type": ...}}`` is read by the retry policy like any other:
``overloaded_error`` (HTTP 529) is an overload, ``rate_limit_error`` a rate limit,
``authentication_error`` stops the job. A streamed line is assembled into the message a
non-streamed call returns (``workers.endpoints.claude_stream``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import (
    Body,
    BodyError,
    Family,
    ParsedAnswer,
    RequestContent,
    positive_int,
    type_name,
)
from workers.endpoints.claude_stream import assemble_claude
from workers.endpoints.vision import check_parts, part_tokens
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

MESSAGES = Endpoint("/v1/messages")
ANTHROPIC_VERSION = "2023-06-01"  # the default; settings may name another
MESSAGE_OVERHEAD = 4
_HEADERS = (("anthropic-version", ANTHROPIC_VERSION),)
_KEY_HEADERS = ("x-api-key",)


class Claude(Family):
    """``/v1/messages``."""

    paths: ClassVar[tuple[str, ...]] = (MESSAGES.path,)
    name: ClassVar[str] = "claude"
    can_stream: ClassVar[bool] = True

    def assemble(self, content: bytes) -> dict[str, Any]:
        return assemble_claude(content)

    def check(self, body: Body) -> None:
        if positive_int(body.get("max_tokens")) is None:
            raise BodyError('Claude messages need "max_tokens", a positive integer (the API requires it)')
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BodyError(
                'Claude messages need "messages", a non-empty list of {"role", "content"} objects'
            )
        for i, message in enumerate(messages):
            _check_message(i, message)
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise BodyError(f'"system" must be a string or a list of text blocks (got {type_name(system)})')

    def prompt_tokens(self, body: Body) -> int:
        total = _content_tokens(body.get("system"))
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        return total

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        return positive_int(body.get("max_tokens")) or default

    def request(self, content: bytes) -> RequestContent:
        return RequestContent(content, headers=_HEADERS, key_headers=_KEY_HEADERS)

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        body = self.answer_body(request, content)
        usage = claude_usage(body.get("usage")) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage)

    def answer_text(self, answer: Body) -> str | None:
        content = answer.get("content")
        if not isinstance(content, list):
            return None
        return "".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))


def claude_usage(usage: Any) -> Usage | None:
    """Anthropic's usage as batcher's (see the module docstring); None when missing or all zeros."""
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return None
    split = usage.get("cache_creation")
    one_hour = _count(split, "ephemeral_1h_input_tokens")
    written = (
        _count(usage, "cache_creation_input_tokens") or _count(split, "ephemeral_5m_input_tokens") + one_hour
    )
    read = _count(usage, "cache_read_input_tokens")
    prompt = _count(usage, "input_tokens") + read + written
    completion = _count(usage, "output_tokens")
    if not prompt and not completion:
        return None
    return Usage(
        prompt,
        completion,
        prompt + completion,
        cached_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=min(one_hour, written),
    )


def _count(group: Any, key: str) -> int:
    value = group.get(key) if isinstance(group, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _check_message(i: int, message: Any) -> None:
    if not isinstance(message, dict):
        raise BodyError(
            f'messages[{i}] must be an object with "role" and "content" (got {type_name(message)})'
        )
    if message.get("role") not in ("user", "assistant"):
        raise BodyError(
            f'messages[{i}]."role" must be "user" or "assistant" (the system prompt goes in "system")'
        )
    content = message.get("content")
    if not isinstance(content, str | list) or not content:
        raise BodyError(f'messages[{i}] needs "content": a non-empty string or a list of content blocks')
    if isinstance(content, list):
        check_parts(content, where=f"messages[{i}].content")


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result"):
            total += estimate_text_tokens(orjson.dumps(block.get("input") or block.get("content")).decode())
        else:
            total += part_tokens(block)
    return total
