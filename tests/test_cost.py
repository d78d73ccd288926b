"""Cost arithmetic: list prices, relay quota (ceil per call), cached and reasoning tokens, speech."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from jobs.records import Usage
from workers.cost import cost_of_attempt, relay_quota, upper_bound_cost
from workers.prices import ListPrice, RelayPrice

GPT4O = ListPrice(input=D("2.50"), output=D("10.00"), cached=D("1.25"))
EMBED = ListPrice(input=D("0.02"))
TTS = ListPrice(characters=D("15"))
WHISPER = ListPrice(per_minute=D("0.006"))
IMAGE = ListPrice(per_image=D("0.04"))
PER_CALL = ListPrice(per_call=D("0.01"))
REASONING = ListPrice(input=D("1.10"), output=D("4.40"), reasoning=D("8.80"))


@pytest.mark.parametrize(
    ("usage", "price", "expected"),
    [
        # 1000 × 2.50/1M + 500 × 10/1M = 0.0025 + 0.005
        (Usage(1000, 500), GPT4O, D("0.0075")),
        # 800 uncached × 2.50/1M + 200 cached × 1.25/1M + 500 × 10/1M = 0.002 + 0.00025 + 0.005
        (Usage(1000, 500, cached_tokens=200), GPT4O, D("0.00725")),
        # no cached rate: cached tokens cost as input
        (Usage(1000, 0, cached_tokens=200), ListPrice(input=D("2.50"), output=D(10)), D("0.0025")),
        # 400 output × 4.40/1M + 600 reasoning × 8.80/1M = 0.00176 + 0.00528
        (Usage(0, 1000, reasoning_tokens=600), REASONING, D("0.00704")),
        # no reasoning rate: reasoning tokens are output tokens, 1000 × 10/1M
        (Usage(0, 1000, reasoning_tokens=600), GPT4O, D("0.01")),
        (Usage(5000), EMBED, D("0.0001")),  # 5000 × 0.02/1M
        (Usage(characters=1000), TTS, D("0.015")),  # 1000 × 15/1M
        (Usage(seconds=D(90)), WHISPER, D("0.009")),  # 1.5 min × 0.006
        (Usage(images=3), IMAGE, D("0.12")),
        (Usage(1000, 500), PER_CALL, D("0.01")),  # a per-call price covers any usage
        (Usage(), GPT4O, D(0)),
    ],
)
def test_list_cost(usage: Usage, price: ListPrice, expected: D) -> None:
    assert cost_of_attempt(usage, price) == expected


@pytest.mark.parametrize(
    ("usage", "price"),
    [
        (Usage(10, 5), None),  # the model has no price at all
        (Usage(10, 5), EMBED),  # completion tokens, but no output rate
        (Usage(10), TTS),  # tokens under a per-character price
        (Usage(characters=10), GPT4O),  # characters under a token price
    ],
)
def test_no_price_is_none_never_zero(usage: Usage, price: ListPrice | None) -> None:
    assert cost_of_attempt(usage, price) is None


MINI = RelayPrice(model_ratio=D("0.075"), completion_ratio=D(4))  # gpt-4o-mini: $0.15 / $0.60 per 1M


@pytest.mark.parametrize(
    ("usage", "price", "group", "quota", "usd"),
    [
        # (1000 + 500 × 4) × 0.075 × 1 = 3000 × 0.075 = 225 quota; 225 / 500000 = $0.00045
        (Usage(1000, 500), MINI, D(1), 225, D("0.00045")),
        # 3000 × 0.075 × 1.5 = 337.5 → ceil 338 quota; 338 / 500000 = $0.000676
        (Usage(1000, 500), MINI, D("1.5"), 338, D("0.000676")),
        # 1 × 0.075 = 0.075 → ceil 1 quota = $0.000002: a tiny call costs a whole quota unit
        (Usage(1, 0), MINI, D(1), 1, D("0.000002")),
        # new-api cache_ratio 0.5, gpt-4o model_ratio 1.25, completion_ratio 4:
        # 200 uncached + 800 cached × 0.5 = 600; + 100 × 4 = 1000; × 1.25 = 1250 quota = $0.0025
        (
            Usage(1000, 100, cached_tokens=800),
            RelayPrice(model_ratio=D("1.25"), completion_ratio=D(4), cache_ratio=D("0.5")),
            D(1),
            1250,
            D("0.0025"),
        ),
        # tts-1 model_ratio 7.5 ($15 per 1M): 100 characters count as prompt tokens, 100 × 7.5 = 750 quota
        (Usage(characters=100), RelayPrice(model_ratio=D("7.5")), D(1), 750, D("0.0015")),
        # group ratio 0.8 (a cheaper group): 3000 × 0.075 × 0.8 = 180 quota = $0.00036
        (Usage(1000, 500), MINI, D("0.8"), 180, D("0.00036")),
    ],
)
def test_relay_ratio_cost(usage: Usage, price: RelayPrice, group: D, quota: int, usd: D) -> None:
    assert relay_quota(usage, price, group_ratio=group) == quota
    assert cost_of_attempt(usage, price, group_ratio=group) == usd


def test_relay_ceil_is_per_call_not_per_total() -> None:
    """Ten 1-token calls at ratio 0.075 cost 10 quota, not ceil(0.75) = 1."""
    one = cost_of_attempt(Usage(1), MINI)
    assert one is not None
    assert sum([one] * 10, D(0)) == D(10) / D(500_000)


@pytest.mark.parametrize(
    ("group", "usd"),
    [(D(1), D("0.04")), (D("1.5"), D("0.06"))],  # model_price 0.04 × group ratio
)
def test_relay_per_call_price(group: D, usd: D) -> None:
    price = RelayPrice(model_price=D("0.04"))
    assert cost_of_attempt(Usage(12345, 678), price, group_ratio=group) == usd


def test_group_ratio_does_not_touch_list_prices() -> None:
    assert cost_of_attempt(Usage(1000, 500), GPT4O, group_ratio=D(2)) == D("0.0075")


@pytest.mark.parametrize(
    ("tokens", "characters", "price", "expected"),
    [
        (1000, 0, GPT4O, D("0.01")),  # priced at the dearer rate: 1000 × 10/1M
        (1000, 0, EMBED, D("0.00002")),  # embeddings have only an input rate
        (0, 200, TTS, D("0.003")),  # 200 × 15/1M
        (1000, 0, MINI, D("0.0006")),  # as completion: 1000 × 4 × 0.075 = 300 quota
        (1000, 0, None, None),
    ],
)
def test_upper_bound_cost(tokens: int, characters: int, price: ListPrice | None, expected: D | None) -> None:
    assert upper_bound_cost(tokens, characters, price) == expected
