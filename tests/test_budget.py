"""The budget's arithmetic: recorded spend from per-model sums, reservations, settlement, estimates."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from jobs.endpoints import Endpoint
from jobs.records import Usage
from jobs.store import ModelUsage
from workers.budget import Budget, spend_of
from workers.cost import QUOTA_PER_USD
from workers.prices import ListPrice, PriceBook, RelayPrice

LIST = ListPrice(input=D(2), output=D(8))  # USD per 1M tokens
RELAY = RelayPrice(model_ratio=D("0.5"))  # $1 per 1M prompt tokens, completion ratio 1
BOOK = PriceBook(prices={"list": LIST, "relay": RELAY}, group_ratios={"vip": D(2)})


@pytest.mark.parametrize(
    ("rows", "ratio", "expected"),
    [
        ([], D(1), D(0)),
        ([ModelUsage("list", 3, Usage(prompt_tokens=1_000_000, completion_tokens=500_000))], D(1), D(6)),
        # relay: quota of the sums, plus up to one quota a call for the relay's per-call rounding
        ([ModelUsage("relay", 4, Usage(prompt_tokens=1_000_000))], D(1), D(1) + D(4) / QUOTA_PER_USD),
        ([ModelUsage("relay", 1, Usage(prompt_tokens=1_000_000))], D(2), D(2) + D(1) / QUOTA_PER_USD),
        ([ModelUsage("unpriced", 9, Usage(prompt_tokens=10**9))], D(1), D(0)),  # refused at start
        (
            [
                ModelUsage("list", 1, Usage(completion_tokens=1_000_000)),
                ModelUsage("relay", 2, Usage(prompt_tokens=500_000)),
            ],
            D(1),
            D(8) + D("0.5") + D(2) / QUOTA_PER_USD,
        ),
    ],
)
def test_spend_of(rows: list[ModelUsage], ratio: D, expected: D) -> None:
    assert spend_of(rows, BOOK, ratio) == expected


def budget(limit: str, recorded: list[ModelUsage] | None = None, group: str | None = None) -> Budget:
    b = Budget(D(limit), BOOK, group=group, recorded=lambda: recorded or [])
    b.refresh()
    return b


@pytest.mark.parametrize(
    ("limit", "recorded", "reserves", "granted"),
    [
        ("10", 0, ["4", "4", "4"], [True, True, False]),  # the third would pass 10
        ("10", 6, ["4", "1"], [True, False]),  # recorded spend counts
        ("10", 0, ["10"], [True]),  # exactly at the budget is allowed
        ("1", 0, ["1.01"], [False]),
    ],
)
def test_try_reserve(limit: str, recorded: int, reserves: list[str], granted: list[bool]) -> None:
    rows = [ModelUsage("list", 1, Usage(prompt_tokens=recorded * 500_000))] if recorded else []
    b = budget(limit, rows)
    assert [b.try_reserve(D(r)) for r in reserves] == granted


def test_settle_frees_the_reservation_and_counts_the_spend() -> None:
    b = budget("10")
    assert b.try_reserve(D(6))
    b.settle(D(6), D(2))
    assert (b.reserved, b.local) == (D(0), D(2))
    assert b.try_reserve(D(8))
    assert not b.try_reserve(D("0.01"))


def test_refresh_replaces_local_spend_with_recorded_spend() -> None:
    rows: list[ModelUsage] = []
    b = Budget(D(10), BOOK, group=None, recorded=lambda: rows)
    b.settle(D(0), D(3))  # a call finished here; not yet in the store
    rows.append(ModelUsage("list", 1, Usage(prompt_tokens=1_500_000)))  # now it is: $3
    b.refresh()
    assert (b.recorded, b.local) == (D(3), D(0))


CHAT = {"messages": [{"role": "user", "content": "abcdefgh"}], "max_tokens": 10, "n": 2}


@pytest.mark.parametrize(
    ("endpoint", "model", "body", "expected"),
    [
        # prompt: 2 for 8 ASCII chars + 4 message overhead + 3 reply priming = 9 at $2/1M;
        # completion: max_tokens 10 × n 2 = 20 at $8/1M
        ("/v1/chat/completions", "list", CHAT, D(9 * 2 + 20 * 8) / D(1_000_000)),
        ("/v1/embeddings", "list", {"input": "abcdefgh"}, D(2 * 2) / D(1_000_000)),
        ("/v1/chat/completions", "unpriced", CHAT, D(0)),
    ],
)
def test_estimate_prices_the_token_estimate(
    endpoint: str, model: str, body: dict[str, object], expected: D
) -> None:
    assert budget("1").estimate(Endpoint(endpoint), model, [body]) == expected


def test_a_group_ratio_applies_to_relay_prices_only() -> None:
    assert budget("1", group="vip").group_ratio == D(2)
    usage = Usage(prompt_tokens=1_000_000)
    assert budget("1", group="vip").cost("relay", usage) == D(2)
    assert budget("1", group="vip").cost("list", usage) == D(2)  # list price: $2 per 1M whatever the group
    assert budget("1").cost("relay", usage) == D(1)
