"""The stand-in relay's billing endpoints: one-api's subscription and usage, new-api's ``/api/pricing``.

Usage counts a stand-in price of 0.1 cent per answer served, plus what the async tasks were
charged net of refunds at their own prices (``tasks_billing``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from batcher.devrelay.faults import JSON, error_body
from batcher.devrelay.tasks_billing import QUOTA_PER_UNIT, pricing_answer

if TYPE_CHECKING:
    from batcher.devrelay.relay import Relay

BILLED_CENTS_PER_ANSWER = 0.1  # what the billing usage endpoint counts per answer served


class BillingRoutes:
    """The billing endpoints of one relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def register(self, app: web.Application) -> None:
        app.router.add_get("/v1/dashboard/billing/subscription", self._subscription)
        app.router.add_get("/v1/dashboard/billing/usage", self._usage)
        app.router.add_get("/api/pricing", self._pricing)

    def _refused(self, request: web.Request) -> web.Response | None:
        key = self.relay.config.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            body = error_body("无效的令牌", "one_api_error", "invalid_api_key")
            return web.Response(status=401, body=body, content_type=JSON)
        return None

    async def _subscription(self, request: web.Request) -> web.Response:
        """one-api's billing subscription: the key's limit in USD."""
        limit = self.relay.config.balance_usd
        data = {"object": "billing_subscription", "hard_limit_usd": limit, "system_hard_limit_usd": limit}
        return self._refused(request) or web.Response(body=orjson.dumps(data), content_type=JSON)

    async def _usage(self, request: web.Request) -> web.Response:
        """one-api's billing usage, in US cents (see the module docstring)."""
        relay = self.relay
        tasks = relay.tasks.ledger.net_quota * 100 / QUOTA_PER_UNIT
        data = {"object": "list", "total_usage": relay.stats.served * BILLED_CENTS_PER_ANSWER + tasks}
        return self._refused(request) or web.Response(body=orjson.dumps(data), content_type=JSON)

    async def _pricing(self, request: web.Request) -> web.Response:
        """new-api's public ``/api/pricing``: the async tasks' prices per call."""
        return web.Response(body=orjson.dumps(pricing_answer()), content_type=JSON)
