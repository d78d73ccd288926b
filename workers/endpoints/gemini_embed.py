"""Gemini native embeddings: ``/v1beta/models/{model}:embedContent`` and ``:batchEmbedContents``.

One content (``{"content": {"parts": [...]}}``) or a list of requests (``{"requests": [{"model",
"content"}]}``) in, ``embedding.values`` or ``embeddings[].values`` out. The answers carry no
usage, so the input's estimate is kept and flagged; the vectors stay in the stored body (they are
not packed: each line is its own call).
"""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, RequestContent
from workers.endpoints.gemini import KEY_HEADERS, GeminiRoutes, check_content, content_tokens
from workers.tokens import DEFAULT_COMPLETION


class GeminiEmbed(GeminiRoutes):
    """``/v1beta/models/{model}:embedContent`` and ``:batchEmbedContents``."""

    name: ClassVar[str] = "gemini_embed"
    billed_in: ClassVar[str] = "tokens, estimated"  # the answers carry no usage
    methods: ClassVar[tuple[str, ...]] = ("embedContent", "batchEmbedContents")

    def repeatable(self, body: Body) -> bool | None:
        return True  # a model's vectors for a text do not vary

    def check(self, body: Body) -> None:
        if "requests" in body:
            requests = body["requests"]
            if not isinstance(requests, list) or not requests:
                raise BodyError(
                    'batchEmbedContents needs "requests", a non-empty list of {"model", "content"}'
                )
            for i, request in enumerate(requests):
                content = request.get("content") if isinstance(request, dict) else None
                check_content(content, f"requests[{i}].content")
            return
        if "content" not in body:
            raise BodyError(
                'embedContent needs "content": {"parts": [{"text": "..."}]} (or "requests" to batch)'
            )
        check_content(body["content"], "content")

    def prompt_tokens(self, body: Body) -> int:
        return sum(content_tokens(c) for c in _contents(body))

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        return 0

    def expected_usage(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens(body))

    def request(self, content: bytes) -> RequestContent:
        return RequestContent(content, key_headers=KEY_HEADERS)

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        return Usage(prompt, 0, prompt, estimated=True)

    def vectors(self, answer: Body) -> list[list[float]]:
        single = answer.get("embedding")
        found = [single] if isinstance(single, dict) else answer.get("embeddings") or []
        return [e["values"] for e in found if isinstance(e, dict) and isinstance(e.get("values"), list)]


def _contents(body: Body) -> list[Any]:
    if isinstance(body.get("requests"), list):
        return [r.get("content") for r in body["requests"] if isinstance(r, dict)]
    return [body.get("content")]
