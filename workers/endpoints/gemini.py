"""Gemini native (``/v1beta/models/{model}:generateContent``): contents in, candidates out.

The model is part of the route, never the body: a line's ``url`` must match ``ROUTE`` exactly
(a model name of letters, digits, ``.``, ``_`` and ``-``, no ``..``, no other segment, no query),
and the stored model is taken from it. The key goes as ``x-goog-api-key`` (and Bearer, which
new-api also reads). Usage comes from ``usageMetadata``, as new-api bills it: prompt =
``promptTokenCount + toolUsePromptTokenCount``, completion = ``candidatesTokenCount +
thoughtsTokenCount`` (the thoughts are its reasoning part), cached = ``cachedContentTokenCount``.

``:streamGenerateContent?alt=sse`` (the only query a line's ``url`` may carry) is the
``gemini_stream`` family: always streamed, assembled into the answer generateContent gives.

The embedding routes (``:embedContent``, ``:batchEmbedContents``) are the ``gemini_embed`` family
in ``workers.endpoints.gemini_embed``; both share ``ROUTE`` and ``model_in``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import orjson

from jobs.records import Usage
from workers.endpoints.base import (
    Body,
    BodyError,
    Family,
    ParsedAnswer,
    RequestContent,
    fixed_sampling,
    positive_int,
    type_name,
)
from workers.endpoints.sse import StreamCut, events
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

ROUTE = re.compile(
    r"/v1beta/models/(?P<model>(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}):(?P<method>[A-Za-z]+)"
    r"(?P<sse>\?alt=sse)?"
)
STREAM = "streamGenerateContent"
KEY_HEADERS = ("x-goog-api-key",)
CONTENT_OVERHEAD = 4
IMAGE_PART_TOKENS = 258  # Gemini bills an inline image as 258 tokens (one tile)


def model_in(path: str, methods: tuple[str, ...]) -> str | None:
    """The model of a Gemini route when the path is exactly one of ``methods``' routes, else None."""
    match = ROUTE.fullmatch(path)
    if match is None or match["method"] not in methods or bool(match["sse"]) != (match["method"] == STREAM):
        return None
    return str(match["model"])


class GeminiRoutes(Family):
    """The routes of a Gemini family: the model in the path, then one of ``methods``.

    It sets no ``name``, so the registry does not take it for a family of its own.
    """

    methods: ClassVar[tuple[str, ...]] = ()

    def accepts(self, path: str) -> bool:
        return model_in(path, self.methods) is not None

    def route_names(self) -> tuple[str, ...]:
        return tuple(f"/v1beta/models/{{model}}:{m}" for m in self.methods)

    def path_model(self, path: str) -> str | None:
        return model_in(path, self.methods)


class Gemini(GeminiRoutes):
    """``/v1beta/models/{model}:generateContent``."""

    name: ClassVar[str] = "gemini"
    methods: ClassVar[tuple[str, ...]] = ("generateContent",)

    def repeatable(self, body: Body) -> bool | None:
        config = body.get("generationConfig") or body.get("generation_config")
        return fixed_sampling(config if isinstance(config, dict) else {})

    def check(self, body: Body) -> None:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BodyError('Gemini needs "contents", a non-empty list of {"role", "parts": [{"text": ...}]}')
        for i, content in enumerate(contents):
            check_content(content, f"contents[{i}]")
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system is not None:
            check_content(system, "systemInstruction")

    def prompt_tokens(self, body: Body) -> int:
        system = body.get("systemInstruction", body.get("system_instruction"))
        total = content_tokens(system) if system is not None else 0
        return total + sum(CONTENT_OVERHEAD + content_tokens(c) for c in body.get("contents") or [])

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        config = config if isinstance(config, dict) else {}
        limit = positive_int(config.get("maxOutputTokens")) or default
        return None if limit is None else limit * (positive_int(config.get("candidateCount")) or 1)

    def request(self, content: bytes) -> RequestContent:
        return RequestContent(content, key_headers=KEY_HEADERS)

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        body = self.answer_body(request, content)
        usage = gemini_usage(body.get("usageMetadata")) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage)

    def answer_text(self, answer: Body) -> str | None:
        candidates = answer.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            return None
        return parts_text((candidates[0].get("content") or {}).get("parts"))


class GeminiStream(Gemini):
    """``/v1beta/models/{model}:streamGenerateContent?alt=sse``: every call streams."""

    name: ClassVar[str] = "gemini_stream"
    methods: ClassVar[tuple[str, ...]] = (STREAM,)
    can_stream: ClassVar[bool] = True

    def route_names(self) -> tuple[str, ...]:
        return (f"/v1beta/models/{{model}}:{STREAM}?alt=sse",)

    def streamed(self, body: Body) -> bool:
        return True

    def assemble(self, content: bytes) -> dict[str, Any]:
        """One candidate with the chunks' text joined, the last usageMetadata; cut without finishReason."""
        chunks = [e.json() for e in events(content)]
        candidates = [c for chunk in chunks for c in chunk.get("candidates") or [] if isinstance(c, dict)]
        finished = next((c for c in reversed(candidates) if c.get("finishReason")), None)
        if finished is None:
            raise StreamCut("the stream ended before a candidate's finishReason")
        text = "".join(parts_text((c.get("content") or {}).get("parts")) for c in candidates)
        content_out = {"role": "model", "parts": [{"text": text}]}
        answer: dict[str, Any] = {
            "candidates": [{"content": content_out, "finishReason": finished["finishReason"], "index": 0}]
        }
        meta = next(
            (c["usageMetadata"] for c in reversed(chunks) if isinstance(c.get("usageMetadata"), dict)), None
        )
        version = next((c["modelVersion"] for c in chunks if "modelVersion" in c), None)
        return (
            answer
            | ({"usageMetadata": meta} if meta else {})
            | ({"modelVersion": version} if version else {})
        )


def gemini_usage(meta: Any) -> Usage | None:
    """``usageMetadata`` as batcher's usage (see the module docstring); None when missing or zero."""
    if not isinstance(meta, dict):
        return None
    thoughts = _count(meta, "thoughtsTokenCount")
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    if not prompt and not completion:
        return None
    return Usage(
        prompt,
        completion,
        _count(meta, "totalTokenCount") or prompt + completion,
        cached_tokens=_count(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def parts_text(parts: Any) -> str:
    """The text parts of a Gemini content, joined (thought parts left out)."""
    if not isinstance(parts, list):
        return ""
    return "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
    )


def check_content(content: Any, where: str) -> None:
    """Raise ``BodyError`` unless ``content`` is ``{"parts": [...]}`` with text or data parts."""
    if not isinstance(content, dict):
        raise BodyError(f'{where} must be an object {{"role", "parts"}} (got {type_name(content)})')
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise BodyError(f'{where} needs "parts", a non-empty list such as [{{"text": "..."}}]')
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not part:
            raise BodyError(f'{where}.parts[{j}] must be an object such as {{"text": "..."}}')


def content_tokens(content: Any) -> int:
    """Tokens of a content's parts: text by the estimate, an inline or file image as one tile."""
    parts = content.get("parts") if isinstance(content, dict) else None
    total = 0
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            total += estimate_text_tokens(part["text"])
        elif any(k in part for k in ("inlineData", "inline_data", "fileData", "file_data")):
            total += IMAGE_PART_TOKENS
        else:
            total += estimate_text_tokens(orjson.dumps(part).decode())
    return total


def _count(meta: Body, key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
