"""The stand-in relay's Claude-native (``/v1/messages``) answers: pure functions of the body.

The text is a digest of the messages then the last message's text, as for chat. The cache is
imitated from the body alone, so repeated calls give the same usage: a ``system`` block with
``cache_control`` is read from the cache, a message block with ``cache_control`` is written to
it (for an hour with ``"ttl": "1h"``, else five minutes). Errors use Anthropic's envelope
(``batcher.devrelay.envelopes``).
"""

from __future__ import annotations

from typing import Any

from batcher.devrelay.answers import (
    InvalidBody,
    Usage,
    _digest,
    _require_model,
    body_key,
    count_tokens,
    message_text,
)


def expected_claude_text(body: dict[str, Any]) -> str:
    """The text of the answer: a digest of the messages, then the last message's text."""
    messages = body["messages"]
    return f"echo {_digest(messages)}: {message_text(messages[-1].get('content'))[:200]}"


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _tokens(block: dict[str, Any]) -> int:
    text = block.get("text")
    return count_tokens(text) if isinstance(text, str) else 1


def claude_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's usage object for a body (see the module docstring for the cache rule)."""
    fresh = read = five = hour = 0
    for block in _blocks(body.get("system")):
        if block.get("cache_control"):
            read += _tokens(block)
        else:
            fresh += _tokens(block)
    for message in body["messages"]:
        for block in _blocks(message.get("content")):
            control = block.get("cache_control")
            if not control:
                fresh += _tokens(block)
            elif isinstance(control, dict) and control.get("ttl") == "1h":
                hour += _tokens(block)
            else:
                five += _tokens(block)
    output = min(count_tokens(expected_claude_text(body)), int(body["max_tokens"]))
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": five + hour,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
        "output_tokens": output,
    }


def claude_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The ``message`` object for a body, and what the relay served (in the stats' names)."""
    model = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise InvalidBody("messages: must be a non-empty array of message objects", "messages")
    cap = body.get("max_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise InvalidBody("max_tokens: Field required", "max_tokens")
    usage = claude_usage(body)
    answer = {
        "id": f"msg_{body_key(body)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": expected_claude_text(body)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    served = {"prompt_tokens": prompt, "completion_tokens": usage["output_tokens"]}
    return answer, served | {"total_tokens": prompt + usage["output_tokens"]}
