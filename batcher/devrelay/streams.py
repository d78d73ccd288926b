"""The stand-in relay's event streams: an answer cut into the events its route streams.

The events carry the same answer a non-streamed call gets, its text in pieces, so a client that
assembles them stores the same body and usage: OpenAI chunks ending with the usage chunk (the
client asks ``stream_options.include_usage``) and ``data: [DONE]``; the Responses API's
``response.created`` / ``response.output_text.delta`` / ``response.completed``; Claude's
``message_start`` … ``message_stop``; Gemini's chunks, the last with ``finishReason``.
``cut`` drops the end of a stream (the ``stream_cut`` fault): the client must retry it;
``overloaded`` breaks it off halfway with the route's own error event (``stream_overload``).
"""

from __future__ import annotations

from typing import Any

import orjson

SSE = "text/event-stream"
PIECES = 3  # how many deltas a text is sent in


def _event(data: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


def pieces(text: str) -> list[str]:
    """The text in ``PIECES`` parts that join back to it."""
    step = max(1, -(-len(text) // PIECES))
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def stream_of(path: str, answer: dict[str, Any]) -> bytes:
    """The event stream of ``answer`` for the route ``path``."""
    if path == "/v1/messages":
        return claude_stream(answer)
    if path == "/v1/responses":
        return responses_stream(answer)
    if path.startswith("/v1beta/"):
        return gemini_stream(answer)
    return openai_stream(answer)


def openai_stream(answer: dict[str, Any]) -> bytes:
    """Chat or completions chunks, then the usage chunk and ``[DONE]``."""
    chat = answer.get("object") == "chat.completion"
    head: dict[str, Any] = {k: answer[k] for k in ("id", "created", "model") if k in answer}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    out = []
    for choice in answer["choices"]:
        index = choice["index"]
        text = choice["message"]["content"] if chat else choice["text"]
        for n, piece in enumerate(pieces(text)):
            delta = ({"role": "assistant"} if n == 0 else {}) | {"content": piece}
            part = {"index": index, "delta": delta} if chat else {"index": index, "text": piece}
            out.append(_event(head | {"choices": [part | {"finish_reason": None}]}))
        last = {"index": index, "delta": {}} if chat else {"index": index, "text": ""}
        out.append(_event(head | {"choices": [last | {"finish_reason": choice["finish_reason"]}]}))
    out.append(_event(head | {"choices": [], "usage": answer["usage"]}))
    return b"".join(out) + _event(b"[DONE]")


def responses_stream(answer: dict[str, Any]) -> bytes:
    """``response.created``, the text deltas, ``response.completed`` with the whole response."""
    started = answer | {"status": "in_progress", "output": [], "usage": None}
    out = [_event({"type": "response.created", "response": started}, "response.created")]
    text = answer["output"][0]["content"][0]["text"]
    for piece in pieces(text):
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": piece}
        out.append(_event(delta, "response.output_text.delta"))
    out.append(_event({"type": "response.completed", "response": answer}, "response.completed"))
    return b"".join(out)


def claude_stream(answer: dict[str, Any]) -> bytes:
    """``message_start`` … ``message_stop``: the input usage first, the output usage at the end."""
    usage = answer["usage"]
    start = answer | {"content": [], "stop_reason": None, "usage": usage | {"output_tokens": 1}}
    out = [_event({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(answer["content"]):
        out.append(
            _event(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        for piece in pieces(block["text"]):
            delta = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": piece},
            }
            out.append(_event(delta, "content_block_delta"))
        out.append(_event({"type": "content_block_stop", "index": index}, "content_block_stop"))
    end = {"stop_reason": answer["stop_reason"], "stop_sequence": answer["stop_sequence"]}
    out.append(
        _event(
            {"type": "message_delta", "delta": end, "usage": {"output_tokens": usage["output_tokens"]}},
            "message_delta",
        )
    )
    return b"".join(out) + _event({"type": "message_stop"}, "message_stop")


def gemini_stream(answer: dict[str, Any]) -> bytes:
    """Gemini chunks of the candidate's text; the last carries ``finishReason`` and the usage."""
    candidate = answer["candidates"][0]
    texts = pieces(candidate["content"]["parts"][0]["text"])
    out = []
    for n, piece in enumerate(texts):
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}]
        }
        if n == len(texts) - 1:
            chunk["candidates"][0]["finishReason"] = candidate["finishReason"]
            chunk["usageMetadata"] = answer["usageMetadata"]
        out.append(_event(chunk | {"modelVersion": answer.get("modelVersion")}))
    return b"".join(out)


def cut(stream: bytes) -> bytes:
    """The stream without its last two events: no end marker, so the client must retry."""
    events = stream.split(b"\n\n")
    return b"\n\n".join(events[: max(1, len(events) - 3)]) + b"\n\n"


_OVERLOAD_EVENTS = {  # what each kind of route sends when the upstream gives up mid-stream
    "claude": _event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"
    ),
    "responses": _event(
        {"type": "error", "code": "server_error", "message": "The server is overloaded"}, "error"
    ),
    "gemini": _event(
        {
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        }
    ),
    "openai": _event(
        {"error": {"message": "upstream overloaded", "type": "upstream_error", "code": "upstream_overloaded"}}
    )
    + _event(b"[DONE]"),  # new-api ends the stream as usual: only the error event tells
}


def overloaded(path: str, stream: bytes) -> bytes:
    """The first half of a stream's events, then the route's overload error event."""
    events = [e for e in stream.split(b"\n\n") if e]
    head = b"".join(e + b"\n\n" for e in events[: max(1, len(events) // 2)])
    kind = {"/v1/messages": "claude", "/v1/responses": "responses"}.get(path)
    return head + _OVERLOAD_EVENTS[kind or ("gemini" if path.startswith("/v1beta/") else "openai")]
