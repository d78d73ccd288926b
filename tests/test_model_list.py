"""A relay's model list: OpenAI's list shape, relays without the route, refusals without the key."""

from __future__ import annotations

import httpx
import pytest

from batcher.model_list import Unreachable, fetch_models
from jobs.errors import ApiError
from workers.client import ClientConfig

KEY = "sk-models-canary-123456789"
CONFIG = ClientConfig("https://relay.test/v1", KEY)


def relay(status: int, body: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_lists_the_ids_sorted_once_each() -> None:
    body = {"object": "list", "data": [{"id": "b", "object": "model"}, {"id": "a"}, {"id": "b"}, {"x": 1}]}
    assert fetch_models(CONFIG, transport=relay(200, body)) == ["a", "b"]


@pytest.mark.parametrize(("status", "body"), [(404, {"error": "no"}), (405, {}), (200, {"models": []})])
def test_a_relay_without_a_list_lists_none(status: int, body: object) -> None:
    assert fetch_models(CONFIG, transport=relay(status, body)) is None


def test_a_refusal_is_an_error_without_the_key() -> None:
    error = {"error": {"message": f"无效的令牌 {KEY}", "type": "one_api_error", "code": "invalid_api_key"}}
    with pytest.raises(ApiError) as caught:
        fetch_models(CONFIG, transport=relay(401, error))
    assert KEY not in str(caught.value)
    assert caught.value.status == 401


def test_an_unreachable_relay_says_so() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unreachable, match=r"cannot reach https://relay\.test/v1"):
        fetch_models(CONFIG, transport=httpx.MockTransport(handler))
