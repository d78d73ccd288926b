"""Streamed chat and completions answers assembled into the ``chat.completion`` /
``text_completion`` objects a non-streamed call returns.

Chunks carry deltas per choice ``index``: text (``content`` / ``text``, ``refusal``), tool calls
merged by their own ``index`` (``arguments`` concatenated), and ``finish_reason``; the usage
comes in the last chunk before ``[DONE]`` because batcher asks for it
(``stream_options.include_usage``, set by ``ask_for_usage`` at ingest). No family is defined here.
"""

from __future__ import annotations

from typing import Any

from workers.endpoints.sse import data_events

_COMMON = ("id", "created", "model", "system_fingerprint", "service_tier")


def ask_for_usage(body: dict[str, Any]) -> None:
    """Make a streamed OpenAI call report its usage (``stream_options.include_usage``)."""
    if body.get("stream") is True:
        options = body.get("stream_options")
        body["stream_options"] = (options if isinstance(options, dict) else {}) | {"include_usage": True}


def assemble_chat(content: bytes) -> dict[str, Any]:
    """The ``chat.completion`` object of a streamed chat answer."""
    chunks = data_events(content)
    answer = _head(chunks, "chat.completion")
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(int(part.get("index") or 0), {"message": {"role": "assistant"}})
            _add_delta(choice["message"], part.get("delta") or {})
            _finish(choice, part)
    answer["choices"] = [
        {
            "index": i,
            "message": _message(c["message"]),
            "logprobs": None,
            "finish_reason": c.get("finish_reason"),
        }
        for i, c in sorted(choices.items())
    ]
    return _with_usage(answer, chunks)


def assemble_completion(content: bytes) -> dict[str, Any]:
    """The ``text_completion`` object of a streamed completions answer."""
    chunks = data_events(content)
    answer = _head(chunks, "text_completion")
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(int(part.get("index") or 0), {"text": ""})
            choice["text"] += str(part.get("text") or "")
            _finish(choice, part)
    answer["choices"] = [
        {"text": c["text"], "index": i, "logprobs": None, "finish_reason": c.get("finish_reason")}
        for i, c in sorted(choices.items())
    ]
    return _with_usage(answer, chunks)


def _head(chunks: list[dict[str, Any]], obj: str) -> dict[str, Any]:
    first = chunks[0] if chunks else {}
    return {"object": obj} | {k: first[k] for k in _COMMON if k in first}


def _with_usage(answer: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    usage = next((c["usage"] for c in reversed(chunks) if isinstance(c.get("usage"), dict)), None)
    return answer | ({"usage": usage} if usage is not None else {})


def _finish(choice: dict[str, Any], part: dict[str, Any]) -> None:
    if part.get("finish_reason") is not None:
        choice["finish_reason"] = part["finish_reason"]


def _add_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    if isinstance(delta.get("role"), str):
        message["role"] = delta["role"]
    for key in ("content", "refusal", "reasoning_content"):
        if isinstance(delta.get(key), str):
            message[key] = message.get(key, "") + delta[key]
    for call in delta.get("tool_calls") or []:
        _add_tool_call(message.setdefault("tool_calls", {}), call)


def _add_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    call = calls.setdefault(int(delta.get("index") or 0), {"type": "function", "function": {"arguments": ""}})
    for key in ("id", "type"):
        if delta.get(key):
            call[key] = delta[key]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] = function["name"]
    call["function"]["arguments"] += str(function.get("arguments") or "")


def _message(message: dict[str, Any]) -> dict[str, Any]:
    out = {"role": message.get("role", "assistant"), "content": message.get("content")}
    out |= {k: message[k] for k in ("refusal", "reasoning_content") if k in message}
    if message.get("tool_calls"):
        out["tool_calls"] = [call for _, call in sorted(message["tool_calls"].items())]
    return out
