"""Chat completions (``/v1/chat/completions``): messages in, choices of messages out."""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import (
    Body,
    BodyError,
    Family,
    first_choice,
    limit_times_choices,
    positive_int,
    type_name,
)
from workers.endpoints.openai_stream import ask_for_usage, assemble_chat
from workers.endpoints.vision import check_parts, part_tokens
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

CHAT = Endpoint("/v1/chat/completions")

MESSAGE_OVERHEAD = 4  # role and separators of each chat message
REPLY_PRIMING = 3  # the tokens that start the assistant's reply


class Chat(Family):
    """``/v1/chat/completions``."""

    paths: ClassVar[tuple[str, ...]] = (CHAT.path,)
    name: ClassVar[str] = "chat"
    can_stream: ClassVar[bool] = True

    def prepare(self, body: dict[str, Any]) -> None:
        ask_for_usage(body)

    def assemble(self, content: bytes) -> dict[str, Any]:
        return assemble_chat(content)

    def check(self, body: Body) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BodyError('chat needs "messages", a non-empty list of {"role", "content"} objects')
        for i, message in enumerate(messages):
            _check_message(i, message)

    def prompt_tokens(self, body: Body) -> int:
        total = REPLY_PRIMING
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        return total

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        return limit_times_choices(body, positive_int(body.get("n")) or 1, default=default)

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        texts = [str((c.get("message") or {}).get("content") or "") for c in _choices(answer)]
        completion = estimate_text_tokens("".join(texts))
        return Usage(prompt, completion, prompt + completion, estimated=True)

    def answer_text(self, answer: Body) -> str | None:
        message = first_choice(answer).get("message")
        return str(message.get("content") or "") if isinstance(message, dict) else None


def _choices(answer: Body) -> list[dict[str, Any]]:
    return [c for c in answer.get("choices") or [] if isinstance(c, dict)]


def _check_message(i: int, message: Any) -> None:
    if not isinstance(message, dict):
        raise BodyError(
            f'messages[{i}] must be an object with "role" and "content" (got {type_name(message)})'
        )
    if not isinstance(message.get("role"), str):
        raise BodyError(f'messages[{i}] needs a string "role" (system, user, assistant, tool)')
    if "content" not in message:
        raise BodyError(f'messages[{i}] needs "content" (a string or a list of parts)')
    content = message["content"]
    if content is None and not message.get("tool_calls"):
        raise BodyError(f'messages[{i}] has "content": null without "tool_calls"; give it text')
    if content is not None and not isinstance(content, str | list):
        raise BodyError(
            f'messages[{i}]."content" must be a string or a list of parts (got {type_name(content)})'
        )
    if isinstance(content, list):
        check_parts(content, where=f"messages[{i}].content")


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(part_tokens(part) for part in content)
    return 0
