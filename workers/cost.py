"""Cost of one upstream call under one price: pure arithmetic on ``Decimal``.

Two kinds of price (``workers.prices``):

- a list price (USD per 1M tokens, per 1M characters, per minute, per image, per call): the cost
  is the plain sum; images are priced per image unless the answer reported tokens for them
  (gpt-image-1), which are priced as tokens instead. Cached prompt tokens are part of
  ``prompt_tokens`` and cost ``cached`` instead of ``input``; tokens written to the cache
  (Claude) cost ``cache_write`` (``cache_write_1h`` for the hour-long ones); reasoning tokens are part of
  ``completion_tokens`` and cost ``reasoning`` instead of ``output`` when the price names one.
- a relay price (one-api / new-api): the relay charges quota, rounded up **per request**::

      quota = ceil((prompt + cached × (cache_ratio − 1) + written × (cache_creation_ratio − 1)
                    + written_1h × (cache_creation_1h_ratio − 1) + completion × completion_ratio)
                   × model_ratio × group_ratio)

  with 500,000 quota = 1 USD (model_ratio 1 ≙ $2 per 1M prompt tokens). Because of the ceil, cost
  is computed per attempt and summed, never computed on totals. Speech characters count as prompt
  tokens, as one-api bills TTS; transcribed seconds as new-api's audio tokens,
  ``ceil(seconds) / 60 × 1000`` (``audio_tokens``). A fixed price (quota_type 1) costs
  ``model_price × group_ratio`` USD a call whatever the tokens, and that per image for images.

``None`` means "no price": the usage has something to bill that the price does not cover. A caller
must show that, never count it as zero.
"""

from __future__ import annotations

import math
from decimal import Decimal

from jobs.records import Usage
from workers.prices import MILLION, ListPrice, Price, RelayPrice

QUOTA_PER_USD = Decimal(500_000)  # one-api's QuotaPerUnit
AUDIO_TOKENS_PER_MINUTE = 1000  # new-api's "tokens" for a minute of uploaded audio
_ZERO = Decimal(0)


def cost_of_attempt(
    usage: Usage, price: Price | None, *, group_ratio: Decimal = Decimal(1)
) -> Decimal | None:
    """USD one call cost under ``price`` (the group ratio applies to relay prices only)."""
    if price is None:
        return None
    if isinstance(price, RelayPrice):
        return relay_cost(usage, price, group_ratio=group_ratio)
    return list_cost(usage, price)


def cost_of_calls(
    usage: Usage, calls: int, price: Price | None, *, group_ratio: Decimal = Decimal(1)
) -> tuple[Decimal, Decimal] | None:
    """USD of ``calls`` calls from their summed usage, and how much more it may be (None: no price).

    ``usage.calls`` is the sum of the calls' per-call charges (each call's, or 1). Exact under a
    list price when the calls are grouped by whether they reported tokens (images are billed by
    the image only without). A relay rounds each call's quota (up for tokens, down for a fixed
    price); rounded once for the sum, the cost may be up to 1 quota (1/500,000 USD) a call more,
    the second value. A fixed relay price per image counts a call's charges, not its images.
    """
    if calls == 0:
        return _ZERO, _ZERO
    cost = cost_of_attempt(usage, price, group_ratio=group_ratio)
    if cost is None:
        return None
    return cost, Decimal(calls) / QUOTA_PER_USD if isinstance(price, RelayPrice) else _ZERO


def list_cost(usage: Usage, price: ListPrice) -> Decimal | None:
    """USD of a call under a list price; None when something used has no rate (and no per-call price)."""
    if price.per_call is None and _unpriced(usage, price):
        return None
    reasoning = _reasoning(usage, price)
    write_1h = usage.cache_write_1h_tokens
    write_rate = price.input if price.cache_write is None else price.cache_write
    parts = [
        _tokens(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, price.input),
        _tokens(usage.cached_tokens, price.input if price.cached is None else price.cached),
        _tokens(usage.cache_write_tokens - write_1h, write_rate),
        _tokens(write_1h, write_rate if price.cache_write_1h is None else price.cache_write_1h),
        _tokens(usage.completion_tokens - reasoning, price.output),
        _tokens(reasoning, price.reasoning),
        _tokens(usage.characters, price.characters),
        _times(usage.seconds, price.per_minute) / 60,  # multiplied first: exact for whole seconds
        _times(Decimal(_priced_images(usage)), price.per_image),
        (price.per_call or _ZERO) * (usage.calls or 1),
    ]
    return sum(parts, _ZERO)


def _reasoning(usage: Usage, price: ListPrice) -> int:
    """Reasoning tokens billed apart from output: only when the price names their own rate."""
    return usage.reasoning_tokens if price.reasoning is not None else 0


def _priced_images(usage: Usage) -> int:
    """Images billed per image: none when the answer reported tokens (gpt-image-1 bills those)."""
    return 0 if usage.tokens else usage.images


def _tokens(count: int, per_million: Decimal | None) -> Decimal:
    return _ZERO if per_million is None else count * per_million / MILLION


def _times(quantity: Decimal, unit_price: Decimal | None) -> Decimal:
    return _ZERO if unit_price is None else quantity * unit_price


def _unpriced(usage: Usage, price: ListPrice) -> bool:
    """True when some non-zero quantity of the usage has no rate in the price."""
    needs = [
        (usage.prompt_tokens, price.input),
        (usage.completion_tokens - _reasoning(usage, price), price.output),
        (usage.characters, price.characters),
        (usage.seconds, price.per_minute),
        (_priced_images(usage), price.per_image),
    ]
    return any(quantity and rate is None for quantity, rate in needs)


def relay_quota(usage: Usage, price: RelayPrice, *, group_ratio: Decimal = Decimal(1)) -> int:
    """The quota a one-api / new-api relay charges for one token-priced call (rounded up)."""
    cache_ratio = Decimal(1) if price.cache_ratio is None else price.cache_ratio
    billed = usage.prompt_tokens + usage.characters + audio_tokens(usage.seconds)
    prompt = Decimal(billed) + usage.cached_tokens * (cache_ratio - 1)
    write = Decimal(1) if price.cache_creation_ratio is None else price.cache_creation_ratio
    write_1h = write if price.cache_creation_1h_ratio is None else price.cache_creation_1h_ratio
    prompt += (usage.cache_write_tokens - usage.cache_write_1h_tokens) * (write - 1)
    prompt += usage.cache_write_1h_tokens * (write_1h - 1)
    weighted = prompt + usage.completion_tokens * price.completion_ratio
    return math.ceil(weighted * price.model_ratio * group_ratio)


def relay_cost(usage: Usage, price: RelayPrice, *, group_ratio: Decimal = Decimal(1)) -> Decimal:
    """USD (the relay's quota dollars) of one call under a relay price."""
    if price.model_price is not None and usage.calls:
        # new-api: quota = int(price × group × other ratios × 500000), then quota / 500000
        return Decimal(int(price.model_price * group_ratio * usage.calls * QUOTA_PER_USD)) / QUOTA_PER_USD
    if price.model_price is not None:
        return price.model_price * group_ratio * max(1, usage.images)
    return Decimal(relay_quota(usage, price, group_ratio=group_ratio)) / QUOTA_PER_USD


def audio_tokens(seconds: int | Decimal) -> int:
    """new-api's tokens for audio: ceil(seconds) / 60 × 1000, rounded (``service/token_counter.go``)."""
    return round(math.ceil(seconds) * AUDIO_TOKENS_PER_MINUTE / 60) if seconds else 0


def upper_bound_cost(
    tokens: int, characters: int, price: Price | None, *, group_ratio: Decimal = Decimal(1)
) -> Decimal | None:
    """The most a call of ``tokens`` tokens (prompt and completion unknown) or characters costs."""
    if characters:
        return cost_of_attempt(Usage(characters=characters), price, group_ratio=group_ratio)
    as_prompt = cost_of_attempt(Usage(prompt_tokens=tokens), price, group_ratio=group_ratio)
    as_output = cost_of_attempt(Usage(completion_tokens=tokens), price, group_ratio=group_ratio)
    known = [c for c in (as_prompt, as_output) if c is not None]
    return max(known) if known else None
