"""The stand-in relay's routes: what each path answers, built from the request body alone.

``Served`` is a successful answer before any fault bends it; ``path_builders`` are the routes that
carry a model in their path (Gemini native); ``key_header`` the header a native route also takes
the key in; ``streamed`` turns an answer into the event stream a ``"stream": true`` call gets
(``batcher.devrelay.streams``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batcher.devrelay.answers import InvalidBody, Usage, audio_content_type, speech_answer
from batcher.devrelay.faults import JSON
from batcher.devrelay.gemini_answers import gemini_answer, gemini_embed_answer
from batcher.devrelay.streams import SSE, stream_of


@dataclass
class Served:
    """A successful answer before any fault bends it."""

    payload: dict[str, Any] | bytes
    usage: Usage
    content_type: str
    usage_key: str | None = "usage"  # where the answer reports its usage (None: it does not)

    def encode(self, *, with_usage: bool = True) -> bytes:
        if isinstance(self.payload, bytes):
            return self.payload
        if with_usage:
            return orjson.dumps(self.payload)
        return orjson.dumps({k: v for k, v in self.payload.items() if k != self.usage_key})


Builder = Callable[[dict[str, Any]], "Served"]
PathBuilder = Callable[[Mapping[str, str], dict[str, Any]], "Served"]
_MODEL = "{model:[A-Za-z0-9._-]+}"


def path_builders() -> dict[str, PathBuilder]:
    """The answers of patterned routes (Gemini native: the model is in the path)."""
    return {
        f"/v1beta/models/{_MODEL}:{{method:generateContent|streamGenerateContent}}": lambda path, body: (
            Served(*gemini_answer(path["model"], body), JSON, usage_key="usageMetadata")
        ),
        f"/v1beta/models/{_MODEL}:{{method:embedContent|batchEmbedContents}}": lambda path, body: Served(
            *gemini_embed_answer(path["method"], body), JSON, usage_key=None
        ),
    }


def key_header(path: str) -> str | None:
    """The header a native route also takes the key in (new-api's ``TokenAuth``; MJ's without Bearer)."""
    if path == "/v1/messages":
        return "x-api-key"
    if "/mj/" in path:
        return "mj-api-secret"
    return "x-goog-api-key" if path.startswith("/v1beta/") else None


def as_object(body: Any) -> dict[str, Any]:
    """The body when it is a JSON object; raises ``InvalidBody`` for anything else."""
    if not isinstance(body, dict):
        raise InvalidBody("the request body must be a JSON object")
    return body


def speech(body: dict[str, Any]) -> Served:
    audio, usage = speech_answer(body)
    return Served(audio, usage, audio_content_type(body))


def streamed(served: Served, path: str, body: dict[str, Any]) -> Served:
    """The answer as the event stream a streamed call of ``path`` gets, or as it is."""
    if not isinstance(served.payload, dict) or not wants_stream(path, body):
        return served
    return Served(stream_of(path, served.payload), served.usage, SSE, served.usage_key)


def wants_stream(path: str, body: dict[str, Any]) -> bool:
    """Whether the call asked for a stream: ``"stream": true``, or Gemini's streaming route."""
    return body.get("stream") is True or path.endswith(":streamGenerateContent")
