"""Legacy completions (``/v1/completions``): a prompt in, choices of text out."""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family, first_choice, limit_times_choices, positive_int
from workers.endpoints.openai_stream import ask_for_usage, assemble_completion
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens, is_prompt, prompt_like_tokens

COMPLETIONS = Endpoint("/v1/completions")


class Completions(Family):
    """``/v1/completions``."""

    paths: ClassVar[tuple[str, ...]] = (COMPLETIONS.path,)
    name: ClassVar[str] = "completions"
    can_stream: ClassVar[bool] = True

    def prepare(self, body: dict[str, Any]) -> None:
        ask_for_usage(body)

    def assemble(self, content: bytes) -> dict[str, Any]:
        return assemble_completion(content)

    def check(self, body: Body) -> None:
        if not is_prompt(body.get("prompt")):
            raise BodyError('completions need "prompt": a string, a list of strings, or token lists')

    def prompt_tokens(self, body: Body) -> int:
        return prompt_like_tokens(body.get("prompt"))

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        # best_of candidates are all generated (and billed); n of them are returned
        choices = max(positive_int(body.get("n")) or 1, positive_int(body.get("best_of")) or 1)
        return limit_times_choices(body, choices, default=default)

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        prompt = self.prompt_tokens(request)
        choices = [c for c in answer.get("choices") or [] if isinstance(c, dict)]
        completion = estimate_text_tokens("".join(str(c.get("text") or "") for c in choices))
        return Usage(prompt, completion, prompt + completion, estimated=True)

    def answer_text(self, answer: Body) -> str | None:
        text = first_choice(answer).get("text")
        return None if text is None else str(text)
