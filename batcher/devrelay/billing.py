"""The stand-in relay's billing endpoints: one-api's subscription and usage, new-api's ``/api/pricing``;
and the model list (``GET /v1/models``, with ``--models``), with what one-api answers a call for a
model it does not serve or a key past its quota (``unserved``).

Usage counts a stand-in price of 0.1 cent per answer served, plus what the async tasks were
charged net of refunds at their own prices (``tasks_billing``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from batcher.devrelay.faults import CANNED, JSON, error_body
from batcher.devrelay.tasks_billing import QUOTA_PER_UNIT, pricing_answer

if TYPE_CHECKING:
    from batcher.devrelay.config import RelayConfig
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
        app.router.add_get("/v1/models", self._models)

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

    async def _models(self, request: web.Request) -> web.Response:
        """The models it serves, as ``GET /v1/models`` lists them; 404 when it was given none."""
        models = self.relay.config.models
        if not models:  # as on relays that lack the route
            return web.Response(status=404, body=error_body("Not Found", "invalid_request_error", None))
        data = {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "dev-relay"} for m in models],
        }
        return self._refused(request) or web.Response(body=orjson.dumps(data), content_type=JSON)


def unserved(config: RelayConfig, served: int, body: object) -> tuple[int, bytes] | None:
    """one-api's answer (status, body) for a model it does not serve or a key out of quota, or None."""
    if config.quota_after and served >= config.quota_after:
        status, quota, _ = CANNED["quota"]
        return status, quota
    model = body.get("model") if isinstance(body, dict) else None
    if not config.models or model in config.models:
        return None
    message = f"当前分组 default 下对于模型 {model} 无可用渠道 (no available channel)"
    return 404, error_body(message, "new_api_error", "model_not_found")
