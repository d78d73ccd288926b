"""The Responses API (``/v1/responses``): an ``input`` (text or items) in, ``output`` items out.

Usage is named differently from chat: ``input_tokens`` / ``output_tokens``, with
``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens``; batcher's
``Usage`` keeps them as prompt / completion tokens with their cached and reasoning parts. The
export's text is the answer's ``output_text`` (what the SDK computes): the text parts of the
message items of ``output``, joined. A streamed line (``"stream": true``) is stored as the
``response`` its ``response.completed`` event carries; a stream without it was cut.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family, ParsedAnswer, positive_int, type_name
from workers.endpoints.sse import StreamCut, events
from workers.endpoints.vision import check_parts, part_tokens
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

RESPONSES = Endpoint("/v1/responses")

ITEM_OVERHEAD = 4  # role and separators of each input message, as for chat


class Responses(Family):
    """``/v1/responses``."""

    paths: ClassVar[tuple[str, ...]] = (RESPONSES.path,)
    name: ClassVar[str] = "responses"
    can_stream: ClassVar[bool] = True

    def assemble(self, content: bytes) -> dict[str, Any]:
        """The response of a stream: ``response.completed`` (or ``.incomplete``) carries it whole."""
        for event in reversed(events(content)):
            data = event.json()
            if data.get("type") in ("response.completed", "response.incomplete"):
                response = data.get("response")
                if isinstance(response, dict):
                    return response
        raise StreamCut("the stream ended before response.completed")

    def check(self, body: Body) -> None:
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise BodyError(f'"instructions" must be a string (got {type_name(instructions)})')
        value = body.get("input")
        if isinstance(value, str) and value:
            return
        if not isinstance(value, list) or not value:
            raise BodyError(
                'responses need "input": a non-empty string or a list of input items '
                f'such as {{"role": "user", "content": "..."}} (got {type_name(value)})'
            )
        for i, item in enumerate(value):
            _check_item(i, item)

    def prompt_tokens(self, body: Body) -> int:
        total = estimate_text_tokens(str(body.get("instructions") or ""))
        value = body.get("input")
        if isinstance(value, str):
            return total + ITEM_OVERHEAD + estimate_text_tokens(value)
        for item in value if isinstance(value, list) else []:
            total += ITEM_OVERHEAD + _item_tokens(item)
        return total

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        return positive_int(body.get("max_output_tokens")) or default

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        body = self.answer_body(request, content)
        usage = responses_usage(body) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage)

    def answer_text(self, answer: Body) -> str | None:
        return output_text(answer)


def responses_usage(answer: Body) -> Usage | None:
    """The usage a Responses answer reports; None when missing or all zeros."""
    usage = answer.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return None
    prompt, completion = int(usage["input_tokens"]), int(usage.get("output_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    if not (prompt or completion or total):
        return None
    return Usage(
        prompt,
        completion,
        total,
        cached_tokens=_detail(usage, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(usage, "output_tokens_details", "reasoning_tokens"),
    )


def output_text(answer: Body) -> str | None:
    """The text of a Responses answer: ``output_text`` when given, else its message items' text."""
    given = answer.get("output_text")
    if isinstance(given, str):
        return given
    output = answer.get("output")
    if not isinstance(output, list):
        return None
    texts = [
        part["text"]
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
    ]
    return "".join(texts)


def _detail(usage: Body, group: str, key: str) -> int:
    details = usage.get(group)
    value = details.get(key) if isinstance(details, dict) else None
    return value if isinstance(value, int) else 0


def _check_item(i: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise BodyError(f'input[{i}] must be an object such as {{"role": "user", "content": "..."}}')
    if "role" in item:
        content = item.get("content")
        if not isinstance(content, str | list):
            raise BodyError(
                f'input[{i}]."content" must be a string or a list of parts (got {type_name(content)})'
            )
        if isinstance(content, list):
            check_parts(content, where=f"input[{i}].content")
        return
    if not isinstance(item.get("type"), str):
        raise BodyError(f'input[{i}] needs a "role" (a message) or a "type" (another input item)')


def _item_tokens(item: Any) -> int:
    if not isinstance(item, dict):
        return 0
    content = item.get("content")
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(part_tokens(part) for part in content)
    return estimate_text_tokens(orjson.dumps(item).decode())  # a function call output, a reference
