"""The provider client: base URL handling, the key only for the configured origin, no redirects."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest
from aiohttp import web

from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.settings import load_settings
from workers.client import (
    ApiClient,
    ClientConfig,
    NoAnswer,
    OriginBearerAuth,
    RawResponse,
    client_config,
    get,
    normalize_base_url,
)
from workers.endpoints.chat import CHAT
from workers.endpoints.embeddings import EMBEDDINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://relay.example.com", "https://relay.example.com/v1"),
        ("https://relay.example.com/", "https://relay.example.com/v1"),
        ("https://relay.example.com/v1/", "https://relay.example.com/v1"),
        (
            "https://dashscope.example.com/compatible-mode/v1",
            "https://dashscope.example.com/compatible-mode/v1",
        ),
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:8765/v1"),
    ],
)
def test_normalize_base_url_table(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


def test_client_config_without_base_url_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        client_config(load_settings())


def test_client_config_prefers_batcher_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://openai.example.com/v1")
    monkeypatch.setenv("BATCHER_BASE_URL", "https://relay.example.com")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-aaaaaaaa")
    config = client_config(load_settings())
    assert config.base_url == "https://relay.example.com/v1"
    assert config.api_key == "sk-openai-aaaaaaaa"
    assert "sk-openai" not in repr(config)


async def test_call_posts_to_endpoint_with_bearer_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    config = ClientConfig("https://relay.example.com/v1", "sk-secret-123456")
    async with ApiClient(config, transport=httpx.MockTransport(handler)) as client:
        answer = await client.call(EMBEDDINGS, b'{"model":"m","input":"x"}')
    assert answer.status == 200
    assert str(seen[0].url) == "https://relay.example.com/v1/embeddings"
    assert seen[0].headers["authorization"] == "Bearer sk-secret-123456"
    assert seen[0].content == b'{"model":"m","input":"x"}'


async def test_call_does_not_follow_redirects_nor_send_key_elsewhere() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "https://evil.example.net/steal"})

    config = ClientConfig("https://relay.example.com/v1", "sk-secret-123456")
    async with ApiClient(config, transport=httpx.MockTransport(handler)) as client:
        answer = await client.call(CHAT, b"{}")
    assert answer.status == 302
    assert [r.url.host for r in seen] == ["relay.example.com"]  # the redirect was not followed
    assert "sk-secret" not in repr(client)


def test_origin_auth_adds_the_key_only_for_the_configured_origin() -> None:
    auth = OriginBearerAuth("sk-secret-123456", "https://relay.example.com/v1")
    mine = next(auth.auth_flow(httpx.Request("GET", "https://relay.example.com/v1/dashboard")))
    other = next(auth.auth_flow(httpx.Request("GET", "https://evil.example.net/v1/dashboard")))
    assert mine.headers["authorization"] == "Bearer sk-secret-123456"
    assert "authorization" not in other.headers
    assert "sk-secret" not in repr(auth)


@contextlib.asynccontextmanager
async def loopback(*routes: tuple[str, str, Handler]) -> AsyncIterator[str]:
    """A real aiohttp server on a free loopback port with these (method, path, handler); its base URL."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_real_transport_reaches_a_loopback_server() -> None:
    """The default (aiohttp) transport over real loopback HTTP, with httpx's API."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"auth": request.headers.get("Authorization")})

    routes = (("POST", "/v1/chat/completions", handle),)
    async with loopback(*routes) as url, ApiClient(ClientConfig(url, "sk-loop-1234567")) as client:
        answer = await client.call(CHAT, b"{}")
    assert answer.status == 200
    assert answer.content == b'{"auth": "Bearer sk-loop-1234567"}'


async def test_real_transport_reads_headers_and_compressed_answers_and_follows_no_redirect() -> None:
    """What the default transport hands back: the status, headers by any case, the body decoded."""
    seen: list[bytes] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(await request.read())
        answer = web.Response(body=gzip.compress(b'{"ok":true}'), content_type="application/json")
        answer.headers.update({"Content-Encoding": "gzip", "X-Request-Id": "req-9", "Retry-After": "2"})
        return answer

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere.example/v1/embeddings")

    async def task(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "type": request.headers.get("Content-Type")})

    routes = (
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/embeddings", moved),
        ("GET", "/v1/t", task),
    )
    async with loopback(*routes) as url, ApiClient(ClientConfig(url, "sk-loop-1234567")) as client:
        answer = await client.call(CHAT, b'{"q":1}')
        redirect = await client.call(EMBEDDINGS, b"{}")
        polled = await client.fetch(Endpoint("/v1/t"))
    assert isinstance(answer, RawResponse) and answer.content == b'{"ok":true}' and seen == [b'{"q":1}']
    assert (answer.headers["x-request-id"], answer.headers.get("retry-after")) == ("req-9", "2")
    assert isinstance(redirect, RawResponse) and redirect.status == 302
    assert redirect.headers["location"] == "https://elsewhere.example/v1/embeddings"
    assert isinstance(polled, RawResponse) and orjson.loads(polled.content) == {"method": "GET", "type": None}


async def test_real_transport_a_connection_dropped_mid_answer_is_no_answer_that_may_have_run() -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Length": "100"})
        await answer.prepare(request)
        await answer.write(b'{"partial":')
        assert request.transport is not None
        request.transport.close()
        return answer

    routes = (("POST", "/v1/chat/completions", drop),)
    async with loopback(*routes) as url, ApiClient(ClientConfig(url, "sk-loop-1234567")) as client:
        answer = await client.call(CHAT, b"{}")
    assert isinstance(answer, NoAnswer)
    assert (answer.classification.error_class, answer.classification.sent) == ("connection", True)


@pytest.mark.parametrize(
    ("error", "error_class", "sent"),
    [
        (httpx.ConnectError("refused"), "connection", False),  # never reached the relay
        (httpx.ReadTimeout("slow"), "timeout", True),  # may have run upstream
        (httpx.RemoteProtocolError("dropped"), "connection", True),
    ],
)
async def test_transport_errors_become_no_answer(
    error: httpx.TransportError, error_class: str, sent: bool
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with ApiClient(
        ClientConfig("https://relay.test/v1", "sk-x"), transport=httpx.MockTransport(fail)
    ) as client:
        answer = await client.call(CHAT, b"{}")
    assert isinstance(answer, NoAnswer)
    assert (answer.classification.error_class, answer.classification.sent) == (error_class, sent)


def test_a_sync_get_translates_the_same_way() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with httpx.Client(base_url="https://relay.test/v1/", transport=httpx.MockTransport(fail)) as client:
        answer = get(client, "dashboard/billing/usage")
    assert isinstance(answer, NoAnswer)
    assert answer.classification.sent is False
