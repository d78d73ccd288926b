"""Turning a successful answer into what the store keeps: the body, the usage, the request id.

- Embeddings asked for with ``encoding_format: "base64"`` are decoded to float lists, so every
  stored vector has one shape whatever the request asked for.
- Usage comes from the answer's ``usage``; when an answer has none (relays drop it), the usage is
  estimated from the request and the answer and flagged as estimated. A usage of all zeros counts
  as none: gateways fill it in when the upstream sent nothing, and no answered call used 0 tokens.
- Speech answers are audio bytes: the store keeps the file's path, size and format, and the usage
  is the input's character count (that is how TTS is billed).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.tokens import estimate_prompt_tokens, estimate_text_tokens

AUDIO_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """A successful answer, ready to store."""

    body_json: str
    usage: Usage
    request_id: str | None


def decode_base64_embedding(value: str) -> list[float]:
    """Decode OpenAI's base64 embedding (little-endian float32) into floats."""
    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _decode_embeddings(body: dict[str, Any]) -> None:
    for item in body.get("data") or []:
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            item["embedding"] = decode_base64_embedding(item["embedding"])


def _answer_text(endpoint: Endpoint, body: Mapping[str, Any]) -> str:
    choices = body.get("choices") or []
    if endpoint == Endpoint.CHAT:
        return "".join(
            str((c.get("message") or {}).get("content") or "") for c in choices if isinstance(c, dict)
        )
    return "".join(str(c.get("text") or "") for c in choices if isinstance(c, dict))


def reported_usage(answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The answer's ``usage`` when it reports some; None when missing, malformed or all zeros."""
    usage = answer.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    counts = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not any(isinstance(n, int) and n > 0 for n in counts):
        return None
    return usage


def _usage(endpoint: Endpoint, request: Mapping[str, Any], answer: Mapping[str, Any]) -> Usage:
    usage = reported_usage(answer)
    if usage is not None:
        prompt = int(usage["prompt_tokens"])
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
        return Usage(
            prompt,
            completion,
            total,
            cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens", "prompt_cache_hit_tokens"),
            reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        )
    prompt = estimate_prompt_tokens(endpoint.value, request)
    completion = (
        0 if endpoint == Endpoint.EMBEDDINGS else estimate_text_tokens(_answer_text(endpoint, answer))
    )
    return Usage(prompt, completion, prompt + completion, estimated=True)


def _detail(usage: Mapping[str, Any], group: str, key: str, flat: str | None = None) -> int:
    """A nested usage detail (``prompt_tokens_details.cached_tokens``), or a flat alias (DeepSeek)."""
    details = usage.get(group)
    value = details.get(key) if isinstance(details, dict) else None
    if value is None and flat is not None:
        value = usage.get(flat)
    return int(value) if isinstance(value, int) else 0


def request_id_of(headers: Mapping[str, str], body: Mapping[str, Any] | None = None) -> str | None:
    """The upstream request id: the ``x-request-id`` header, else the answer's ``id``."""
    for name in ("x-request-id", "x-oneapi-request-id", "request-id"):
        if value := headers.get(name):
            return value
    value = (body or {}).get("id")
    return value if isinstance(value, str) else None


def parse_json_answer(
    endpoint: Endpoint, request: Mapping[str, Any], content: bytes, headers: Mapping[str, str]
) -> ParsedAnswer:
    """Parse a classified-OK JSON answer (chat, completions, embeddings)."""
    body = orjson.loads(content)
    if endpoint == Endpoint.EMBEDDINGS:
        _decode_embeddings(body)
    usage = _usage(endpoint, request, body)
    return ParsedAnswer(orjson.dumps(body).decode(), usage, request_id_of(headers, body))


def speech_format(request: Mapping[str, Any]) -> str:
    """The audio format the speech request asked for (mp3 when unset or unknown)."""
    value = request.get("response_format")
    return value if isinstance(value, str) and value in AUDIO_FORMATS else "mp3"


def speech_usage(request: Mapping[str, Any]) -> Usage:
    """Speech is billed per input character."""
    text = request.get("input")
    return Usage(characters=len(text) if isinstance(text, str) else 0)
