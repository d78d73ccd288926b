"""The stand-in relay's Gemini-native answers (``/v1beta/models/{model}:METHOD``): pure functions.

``generateContent``: one candidate whose text is a digest of the contents then the last part's
text, with ``usageMetadata`` (thinking, when ``generationConfig.thinkingConfig`` is set, adds
``THOUGHT_TOKENS``; a ``cachedContent`` name reports half the prompt as cached). The embedding
methods answer vectors derived from each content's text, and no usage, as Gemini does.
"""

from __future__ import annotations

from typing import Any

from batcher.devrelay.answers import InvalidBody, Usage, _digest, count_tokens, expected_embedding

THOUGHT_TOKENS = 3
GEMINI_DIM = 8


def _parts_text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return " ".join(p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str))


def expected_gemini_text(body: dict[str, Any]) -> str:
    """The candidate's text: a digest of the contents, then the last content's text."""
    contents = body["contents"]
    return f"echo {_digest(contents)}: {_parts_text(contents[-1])[:200]}"


def gemini_usage_metadata(body: dict[str, Any]) -> dict[str, int]:
    """The ``usageMetadata`` the relay reports for a generateContent body."""
    texts = [_parts_text(c) for c in body["contents"]] + [_parts_text(body.get("systemInstruction"))]
    prompt = sum(count_tokens(t) for t in texts if t)
    candidates = count_tokens(expected_gemini_text(body))
    config = body.get("generationConfig") or {}
    thoughts = THOUGHT_TOKENS if isinstance(config, dict) and config.get("thinkingConfig") else 0
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if body.get("cachedContent"):
        meta["cachedContentTokenCount"] = prompt // 2
    return meta | {"totalTokenCount": prompt + candidates + thoughts}


def gemini_answer(model: str, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The generateContent answer for a body, and what the relay served."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents or not all(isinstance(c, dict) for c in contents):
        raise InvalidBody("* GenerateContentRequest.contents: contents is not specified", "contents")
    meta = gemini_usage_metadata(body)
    answer = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": expected_gemini_text(body)}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": meta,
        "modelVersion": model,
    }
    completion = meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0)
    served = {"prompt_tokens": meta["promptTokenCount"], "completion_tokens": completion}
    return answer, served | {"total_tokens": meta["totalTokenCount"]}


def gemini_embedding(content: Any) -> list[float]:
    """The vector of one content: from its text, like ``/v1/embeddings``."""
    return expected_embedding(_parts_text(content), GEMINI_DIM)


def gemini_embed_answer(method: str, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """``embedContent`` / ``batchEmbedContents`` answers; no usage in them, the input's tokens served."""
    if method == "batchEmbedContents":
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise InvalidBody("* BatchEmbedContentsRequest.requests: requests is not specified", "requests")
        contents = [r.get("content") for r in requests if isinstance(r, dict)]
        answer: dict[str, Any] = {"embeddings": [{"values": gemini_embedding(c)} for c in contents]}
    else:
        contents = [body.get("content")]
        if not isinstance(contents[0], dict):
            raise InvalidBody("* EmbedContentRequest.content: content is not specified", "content")
        answer = {"embedding": {"values": gemini_embedding(contents[0])}}
    prompt = sum(count_tokens(_parts_text(c)) for c in contents)
    return answer, {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt}
