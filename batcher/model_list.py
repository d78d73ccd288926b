"""A relay's model list (``GET /v1/models``), and the check that a file names only served models.

OpenAI, one-api and new-api answer ``{"object": "list", "data": [{"id": "gpt-4o-mini", ...}]}``.
A relay without the route (404, 405, 501) lists nothing: ``fetch_models`` says None and the check
is skipped, since nothing says what it serves. Answers go through the same classification as any
call, so an error inside a 200 is an error here too.
"""

from __future__ import annotations

import time

import httpx
import orjson

from jobs.errors import ApiError
from workers.client import ClientConfig, NoAnswer, OriginBearerAuth, get
from workers.redact import redact
from workers.retry import Verdict, classify_response

NOT_LISTED = (404, 405, 501)
TIMEOUT_S = httpx.Timeout(15.0, connect=5.0)


class Unreachable(ApiError):
    """Raised when the relay did not answer ``GET /models`` at all."""


def fetch_models(config: ClientConfig, *, transport: httpx.BaseTransport | None = None) -> list[str] | None:
    """The ids of the models the relay lists, sorted; None when it offers no list."""
    auth = OriginBearerAuth(config.api_key, config.base_url) if config.api_key else None
    with httpx.Client(
        base_url=config.base_url + "/", auth=auth, timeout=TIMEOUT_S, follow_redirects=False,
        transport=transport, proxy=config.proxy, trust_env=False,
    ) as client:  # fmt: skip
        response = get(client, "models")
    if isinstance(response, NoAnswer):
        raise Unreachable(f"cannot reach {config.base_url}: {response.classification.message}")
    if response.status in NOT_LISTED:
        return None
    c = classify_response(response.status, response.headers, response.content, now=time.time())
    if c.verdict != Verdict.OK:
        message = redact(c.message, [config.api_key or ""])
        raise ApiError(f"the relay refused GET /models ({message})", status=response.status)
    return _ids(response.content)


def _ids(content: bytes) -> list[str] | None:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return sorted({str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")})
