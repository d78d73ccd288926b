"""Token estimates before a call, for the TPM limiter, the budget and ``batcher estimate``.

No tokenizer is downloaded: tiktoken fetches its encodings from the network on first use, which
batcher must never do. The documented estimate instead: ASCII text counts one token per four
characters (rounded up), and every other character one token. English BPE averages about four
characters a token; CJK text is about one token a character; other scripts and emoji are
overestimated. Overestimating is the safe side for a rate limiter, and the reservation is
reconciled with the real usage after each call anyway.

This module owns the counting rule; what a request of each endpoint counts (messages, a prompt,
an input, characters for speech; ``max_tokens`` × ``n`` or ``best_of``) is its family's
(``workers.endpoints``). The three per-endpoint functions below ask the family, so the limiter,
the budget and the estimate all count one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobs.endpoints import Endpoint

if TYPE_CHECKING:
    from workers.endpoints.base import Family

IMAGE_TOKENS = 765  # a high-detail 512×512 tile set, as OpenAI counts an image
DEFAULT_COMPLETION = 256  # completion tokens a line that sets no limit is expected to use


def estimate_text_tokens(text: str) -> int:
    """Tokens in a text by the rule above: ceil(ASCII chars / 4) + other chars."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def prompt_like_tokens(value: Any) -> int:
    """A prompt or embedding input: a string, strings, a token list, or token lists."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if not isinstance(value, list):
        return 0
    if all(isinstance(x, int) for x in value):
        return len(value)
    return sum(prompt_like_tokens(x) for x in value)


def is_tokens(value: Any) -> bool:
    """A non-empty list of token ids (ints, never bools)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    )


def is_prompt(value: Any) -> bool:
    """A string, or a non-empty list of strings or token lists (or one token list)."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    return is_tokens(value) or all(isinstance(x, str) or is_tokens(x) for x in value)


def _family(endpoint: Endpoint) -> Family:
    # Imported here: the families count with this module's rule, so they import it first.
    from workers.endpoints.registry import family_of

    return family_of(endpoint)


def estimate_prompt_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request (characters of the input for speech, which is billed so)."""
    return _family(endpoint).prompt_tokens(body)


def expected_completion_tokens(
    endpoint: Endpoint, body: Mapping[str, Any], *, default: int = DEFAULT_COMPLETION
) -> int:
    """The completion tokens to expect: ``max_completion_tokens``/``max_tokens`` × choices."""
    return _family(endpoint).completion_tokens(body, default=default) or 0


def reservation_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """What a TPM limiter reserves before the call: prompt estimate + expected completion."""
    return _family(endpoint).reservation_tokens(body)
