"""Moderations (``/v1/moderations``): text (or text and image parts) in, one verdict per input out.

OpenAI bills moderations at nothing and answers with no ``usage``; relays that charge for them
count the input's tokens. So the usage kept is the input's token estimate, flagged as estimated
(``Usage.estimated``: batcher counted it, the relay did not say). The export's text names the
flagged categories of every input, ``not flagged`` when there are none.
"""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family, type_name
from workers.endpoints.vision import IMAGE_PART_TYPES, check_parts, part_tokens
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

MODERATIONS = Endpoint("/v1/moderations")


class Moderations(Family):
    """``/v1/moderations``."""

    paths: ClassVar[tuple[str, ...]] = (MODERATIONS.path,)
    name: ClassVar[str] = "moderations"
    billed_in: ClassVar[str] = "tokens, estimated"  # the answers carry no usage

    def repeatable(self, body: Body) -> bool | None:
        return True  # a classifier's scores for a text do not vary

    def check(self, body: Body) -> None:
        value = body.get("input")
        if isinstance(value, str) and value:
            return
        if not isinstance(value, list) or not value:
            raise BodyError(
                'moderations need "input": a non-empty string, a list of strings, or a list of '
                f'{{"type": "text"}} / {{"type": "image_url"}} parts (got {type_name(value)})'
            )
        for i, item in enumerate(value):
            if not isinstance(item, str) and not _is_part(item):
                raise BodyError(
                    f'input[{i}] must be a string, a {{"type": "text", "text": ...}} part or an '
                    '{"type": "image_url", "image_url": {"url": ...}} part'
                )
        check_parts(value, where="input")

    def prompt_tokens(self, body: Body) -> int:
        value = body.get("input")
        if isinstance(value, str):
            return estimate_text_tokens(value)
        return sum(part_tokens(v) for v in value) if isinstance(value, list) else 0

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        return 0

    def expected_usage(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens(body))

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        return Usage(prompt, 0, prompt, estimated=True)

    def answer_text(self, answer: Body) -> str | None:
        results = answer.get("results")
        if not isinstance(results, list):
            return None
        return "; ".join(_verdict(r) for r in results)


def _is_part(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    if item.get("type") == "text":
        return isinstance(item.get("text"), str)
    return item.get("type") in IMAGE_PART_TYPES


def _verdict(result: Any) -> str:
    if not isinstance(result, dict) or not result.get("flagged"):
        return "not flagged"
    categories = result.get("categories")
    names = sorted(k for k, v in categories.items() if v is True) if isinstance(categories, dict) else []
    return "flagged: " + ", ".join(names) if names else "flagged"
