"""Embeddings (``/v1/embeddings``): input in, vectors out; lines may be packed into shared calls.

Embeddings asked for with ``encoding_format: "base64"`` are decoded to float lists, so every
stored vector has one shape whatever the request asked for.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family, ParsedAnswer, answered_usage
from workers.tokens import is_prompt, prompt_like_tokens


class Embeddings(Family):
    """``/v1/embeddings``."""

    endpoint: ClassVar[Endpoint] = Endpoint.EMBEDDINGS
    name: ClassVar[str] = "embeddings"
    packable: ClassVar[bool] = True

    def check(self, body: Body) -> None:
        value = body.get("input")
        if value == "" or not is_prompt(value):
            raise BodyError(
                'embeddings need "input": a non-empty string or a non-empty list of strings or tokens'
            )

    def prompt_tokens(self, body: Body) -> int:
        return prompt_like_tokens(body.get("input"))

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        body = orjson.loads(content)
        for item in body.get("data") or []:
            if isinstance(item, dict) and isinstance(item.get("embedding"), str):
                item["embedding"] = decode_base64_embedding(item["embedding"])
        usage = answered_usage(body) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage)

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        return Usage(prompt, 0, prompt, estimated=True)

    def vectors(self, answer: Body) -> list[list[float]]:
        data: list[Any] = answer.get("data") or []
        return [d["embedding"] for d in data if isinstance(d, dict) and "embedding" in d]


def decode_base64_embedding(value: str) -> list[float]:
    """Decode OpenAI's base64 embedding (little-endian float32) into floats."""
    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
