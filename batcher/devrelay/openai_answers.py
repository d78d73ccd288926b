"""The stand-in relay's Responses API and moderation answers: pure functions of the request body.

Like ``answers``: ids derive from the body, the text is a digest of the input plus its last
text, and the token counts are the relay's own (``count_tokens``). A Responses request with a
``prompt_cache_key`` gets half its input tokens reported as cached, one with ``reasoning`` two
reasoning tokens on top of its text: so tests see every usage detail go through. Moderations
carry no usage (OpenAI bills none); the relay counts the input's tokens as what it served.
"""

from __future__ import annotations

import time
from typing import Any

from batcher.devrelay.answers import (
    InvalidBody,
    Usage,
    _digest,
    _require_model,
    body_key,
    count_tokens,
    message_text,
)

REASONING_TOKENS = 2  # what a request with "reasoning" reports as reasoning tokens
FLAG_WORD = "violence"  # an input containing it is flagged (category "violence")
CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def _responses_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidBody("'input' must be a string or a non-empty array of input items", "input")
    return [message_text(item.get("content")) for item in value if isinstance(item, dict)]


def expected_output_text(body: dict[str, Any]) -> str:
    """The text of a Responses answer: a digest of the input, then its last text."""
    texts = _responses_texts(body.get("input"))
    return f"echo {_digest(body.get('input'))}: {(texts[-1] if texts else '')[:200]}"


def responses_usage(body: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, cached, output, reasoning) tokens the relay bills for a Responses body."""
    texts = [*_responses_texts(body.get("input")), str(body.get("instructions") or "")]
    prompt = sum(count_tokens(t) for t in texts if t)
    cached = prompt // 2 if body.get("prompt_cache_key") else 0
    reasoning = REASONING_TOKENS if body.get("reasoning") else 0
    output = count_tokens(expected_output_text(body))
    cap = body.get("max_output_tokens")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        output = min(output, cap)
    return prompt, cached, output + reasoning, reasoning


def responses_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The ``response`` object for a body, and its usage (in the stats' chat names)."""
    model = _require_model(body)
    prompt, cached, output, reasoning = responses_usage(body)
    key = body_key(body)
    message = {
        "type": "message",
        "id": f"msg_{key}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": expected_output_text(body), "annotations": []}],
    }
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    }
    answer = {
        "id": f"resp_{key}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [message],
        "usage": usage,
    }
    served = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
    return answer, served


def moderation_inputs(value: Any) -> list[str]:
    """The texts a moderation request asks about (an image part counts as its URL)."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        return [_moderation_text(v) for v in value]
    raise InvalidBody("'input' must be a string, an array of strings or of input parts", "input")


def _moderation_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "text":
        return str(value.get("text") or "")
    if isinstance(value, dict) and isinstance(value.get("image_url"), dict):
        return str(value["image_url"].get("url") or "")
    raise InvalidBody("each input part must be a string, a text part or an image_url part", "input")


def moderation_result(text: str) -> dict[str, Any]:
    """One result: flagged for violence when the text names it."""
    flagged = FLAG_WORD in text.lower()
    return {
        "flagged": flagged,
        "categories": {c: flagged and c == "violence" for c in CATEGORIES},
        "category_scores": {c: 0.9 if flagged and c == "violence" else 0.001 for c in CATEGORIES},
    }


def moderation_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The moderation object for a body; no usage in it, the input's tokens served."""
    model = body.get("model") or "omni-moderation-latest"
    texts = moderation_inputs(body.get("input"))
    answer = {
        "id": f"modr-{body_key(body)}",
        "model": model,
        "results": [moderation_result(t) for t in texts],
    }
    prompt = sum(count_tokens(t) for t in texts)
    return answer, {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt}
