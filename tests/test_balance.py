"""The relay balance: one-api / new-api billing endpoints, errors inside HTTP 200."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from batcher.balance import fetch_balance
from jobs.errors import ApiError
from workers.client import ClientConfig

CONFIG = ClientConfig("https://relay.test/v1", "sk-balance-123456789")


def relay(subscription: dict[str, object], usage: dict[str, object]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer sk-balance-123456789"
        if request.url.path.endswith("/subscription"):
            return httpx.Response(200, json=subscription)
        assert request.url.path == "/v1/dashboard/billing/usage"
        assert "start_date" in request.url.params
        return httpx.Response(200, json=usage)

    return httpx.MockTransport(handler)


def test_fetch_balance_reads_limit_and_used_cents() -> None:
    transport = relay({"object": "billing_subscription", "hard_limit_usd": 25.5}, {"total_usage": 1234.5})
    balance = fetch_balance(CONFIG, transport=transport)
    assert balance.limit_usd == Decimal("25.5")
    assert balance.used_usd == Decimal("12.345")
    assert balance.remaining_usd == Decimal("13.155")


def test_fetch_balance_error_inside_200_says_so_without_the_key() -> None:
    error = {"error": {"message": "无效的令牌 sk-balance-123456789", "type": "one_api_error"}}
    with pytest.raises(ApiError) as caught:
        fetch_balance(CONFIG, transport=relay(error, {}))
    assert "billing endpoints" in str(caught.value)
    assert "sk-balance-123456789" not in str(caught.value)
