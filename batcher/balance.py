"""A relay's balance: what is left and what was used, from its OpenAI-style billing endpoints.

one-api and new-api answer ``GET /v1/dashboard/billing/subscription`` (``hard_limit_usd``: the
key's or user's total quota in USD) and ``GET /v1/dashboard/billing/usage`` (``total_usage``: USD
cents used). Remaining = hard limit - used. Relays put errors inside HTTP 200 too, so each answer
goes through the same classification as any call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson

from jobs.errors import ApiError
from workers.client import ClientConfig, NoAnswer, OriginBearerAuth, get
from workers.redact import redact
from workers.retry import Verdict, classify_response


@dataclass(frozen=True)
class Balance:
    """A relay's balance in USD (as the relay reports it)."""

    limit_usd: Decimal
    used_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        """What is left to spend."""
        return self.limit_usd - self.used_usd


def _get(client: httpx.Client, path: str, config: ClientConfig) -> dict[str, Any]:
    response = get(client, path)
    if isinstance(response, NoAnswer):
        raise ApiError(f"cannot reach {config.base_url}: {response.classification.message}")
    c = classify_response(response.status, response.headers, response.content, now=time.time())
    if c.verdict != Verdict.OK:
        message = redact(c.message, [config.api_key or ""])
        raise ApiError(
            f"the relay refused {path} ({message}); it may not offer billing endpoints",
            status=response.status,
        )
    data: dict[str, Any] = orjson.loads(response.content)
    return data


def fetch_balance(config: ClientConfig, *, transport: httpx.BaseTransport | None = None) -> Balance:
    """The relay's balance, from its subscription and usage endpoints."""
    auth = OriginBearerAuth(config.api_key, config.base_url) if config.api_key else None
    today = datetime.now(UTC).date()
    window = f"start_date={today - timedelta(days=99)}&end_date={today + timedelta(days=1)}"
    with httpx.Client(
        base_url=config.base_url + "/", auth=auth, timeout=30, follow_redirects=False, transport=transport,
        proxy=config.proxy, trust_env=False,
    ) as client:  # fmt: skip
        subscription = _get(client, "dashboard/billing/subscription", config)
        usage = _get(client, f"dashboard/billing/usage?{window}", config)
    limit = Decimal(str(subscription.get("hard_limit_usd") or subscription.get("system_hard_limit_usd") or 0))
    used = Decimal(str(usage.get("total_usage") or 0)) / 100
    return Balance(limit, used)
