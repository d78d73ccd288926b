"""Embeddings (``/v1/embeddings``): input in, vectors out; lines may be packed into shared calls.

The vectors of an answer are taken out of its body as float32 bytes (``jobs.vectors``): float
lists become float32 once, base64 text goes to bytes with no float in between; the exports put
them back as the API sent them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from jobs.vectors import take_vectors
from workers.endpoints.base import Body, BodyError, Family, ParsedAnswer, answered_usage
from workers.tokens import is_prompt, prompt_like_tokens

EMBEDDINGS = Endpoint("/v1/embeddings")


class Embeddings(Family):
    """``/v1/embeddings``."""

    paths: ClassVar[tuple[str, ...]] = (EMBEDDINGS.path,)
    name: ClassVar[str] = "embeddings"
    packable: ClassVar[bool] = True

    def repeatable(self, body: Body) -> bool | None:
        return True  # a model's vectors for a text do not vary

    def check(self, body: Body) -> None:
        value = body.get("input")
        if value == "" or not is_prompt(value):
            raise BodyError(
                'embeddings need "input": a non-empty string or a non-empty list of strings or tokens'
            )

    def prompt_tokens(self, body: Body) -> int:
        return prompt_like_tokens(body.get("input"))

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        """The answer without its vectors, and the vectors; ``ValueError`` if they are not float32."""
        body = orjson.loads(content)
        vectors = take_vectors(body)
        usage = answered_usage(body) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage, vectors, body)

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        return Usage(prompt, 0, prompt, estimated=True)

    def vectors(self, answer: Body) -> list[list[float]]:
        """Vectors kept in a stored body: lines stored before vectors had a table of their own."""
        data: list[Any] = answer.get("data") or []
        return [d["embedding"] for d in data if isinstance(d, dict) and "embedding" in d]
