"""Streamed answers: server-sent events read from a whole answer body, and what a stream means.

A streamed line's answer is read whole like any other (the client's fast path is the same), then
split into events here and assembled by its family into the body a non-streamed call returns
(``Family.assemble``). A stream that ends before its end marker (``data: [DONE]``, Claude's
``message_stop``, the Responses API's ``response.completed``, Gemini's ``finishReason``) raises
``StreamCut``: the executor retries the line and records the call as of unknown outcome (the
relay may have billed it). An error event inside a 2xx stream (``stream_error``) is classified
before any assembling: a bad body, retried, and a "later" when it is an overload or a rate limit.

No family is defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from workers.retry import (
    Classification,
    Throttle,
    Verdict,
    classify_response,
    is_overload,
    is_rate,
    parse_error_body,
)

DONE = "[DONE]"


class StreamCut(ValueError):
    """Raised when a streamed answer ended before its end marker, or broke off with an error."""


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its ``event:`` name (empty when none) and its ``data:`` text."""

    name: str
    data: str

    def json(self) -> dict[str, Any]:
        """The data as a JSON object; ``StreamCut`` when it is not one."""
        try:
            value = orjson.loads(self.data)
        except orjson.JSONDecodeError:
            raise StreamCut(f"a stream event is not JSON: {self.data[:80]!r}") from None
        if not isinstance(value, dict):
            raise StreamCut("a stream event is not a JSON object")
        if value.get("error") or value.get("type") == "error":
            raise StreamCut(f"the stream broke off with an error: {self.data[:300]}")
        return value


def events(content: bytes) -> list[Event]:
    """The events of an event-stream body, in order (comments and empty events left out)."""
    out = []
    text = content.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            out.append(Event(name, "\n".join(data)))
    return out


def data_events(content: bytes) -> list[dict[str, Any]]:
    """The JSON data of an OpenAI-style stream, which must end with ``data: [DONE]``."""
    found = events(content)
    if not found or found[-1].data != DONE:
        raise StreamCut("the stream ended before data: [DONE]")
    return [e.json() for e in found[:-1]]


def is_stream(content: bytes) -> bool:
    """Whether an answer body is an event stream rather than one JSON document."""
    return content.lstrip()[:1] not in (b"{", b"[")


def classify_stream(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> Classification:
    """``classify_response`` for a streamed call: a 2xx event stream is OK unless an event is an error."""
    if 200 <= status < 300 and body.strip() and is_stream(body):
        error = stream_error(body)
        return Classification(Verdict.OK, "ok", "") if error is None else classify_stream_error(status, error)
    return classify_response(status, headers, body, now=now)


def stream_error(content: bytes) -> dict[str, Any] | None:
    """The first error event of a stream as an error body (``{"error": ...}``), or None.

    An ``event: error``, a chunk carrying ``"error"`` (new-api, Gemini), Claude's and the
    Responses API's ``{"type": "error", ...}`` and ``response.failed`` are all error events.
    """
    for event in events(content):
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            data = {"error": {"message": event.data}} if event.name == "error" else {}
        if not isinstance(data, dict):
            continue
        if data.get("type") == "response.failed":
            return {"error": (data.get("response") or {}).get("error") or {"message": "response.failed"}}
        if event.name == "error" or data.get("error") or data.get("type") == "error":
            return data if data.get("error") else {"error": data}
    return None


def classify_stream_error(status: int, error: Mapping[str, Any]) -> Classification:
    """An error event mid-stream: never a success with a truncated answer, always retried.

    It is a bad body (the relay may have billed what it streamed: the call counts as of unknown
    outcome); an overload (Claude's ``overloaded_error``, Gemini's "The model is overloaded") or a
    rate limit is also the relay saying "later", so it waits without using an attempt.
    """
    message, kind, code = parse_error_body(orjson.dumps(error))
    text = (
        f"{status} stream broke off with an error event: {kind or code or 'error'}: {message or ''}".strip()
    )
    throttle = (
        Throttle.OVERLOAD
        if is_overload(message, kind, code)
        else Throttle.RATE
        if is_rate(message, kind, code) or code == "RESOURCE_EXHAUSTED"
        else None
    )
    return Classification(Verdict.RETRY, "bad_body", text, code or kind, sent=True, throttle=throttle)
