"""Streamed answers: server-sent events read from a whole answer body, and what a stream means.

A streamed line's answer is read whole like any other (the client's fast path is the same), then
split into events here and assembled by its family into the body a non-streamed call returns
(``Family.assemble``). A stream that ends before its end marker (``data: [DONE]``, Claude's
``message_stop``, the Responses API's ``response.completed``, Gemini's ``finishReason``) raises
``StreamCut``: the executor retries the line and records the call as of unknown outcome (the
relay may have billed it).

No family is defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from workers.retry import Classification, Verdict, classify_response

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
    """``classify_response`` for a streamed call: a 2xx event stream is OK (its events decide)."""
    if 200 <= status < 300 and body.strip() and is_stream(body):
        return Classification(Verdict.OK, "ok", "")
    return classify_response(status, headers, body, now=now)
