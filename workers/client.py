"""The HTTP client for one provider: base URL and key from settings, explicit timeouts, no redirects.

It speaks httpx's API over ``httpx_aiohttp.AiohttpTransport``: httpx's own async transport costs
several milliseconds of CPU per request under concurrency (encode/httpx#3215), aiohttp's a tenth of
that, and a batch runner lives on that margin. By default the transport's aiohttp session is
driven directly (``_Direct``), without httpx's request and response objects in between; tests
inject ``httpx.MockTransport`` instead, and then httpx's objects carry every call.

Calls go through a proxy when the settings or the environment say so (``workers.proxy``: never
for loopback unless ``BATCHER_PROXY`` asks). Requests go to the configured origin only and
redirects are never followed, so the key cannot travel to another host (``OriginBearerAuth``
gives the same promise to the billing client). The key is kept out of ``repr`` and of every
message.

httpx's transport errors (timeouts, refused or dropped connections) are translated here and
nowhere else: ``ApiClient.call`` and ``get`` return ``NoAnswer`` with the retry policy's reading
of the error (``workers.retry.classify_exception``: retryable; whether the relay may have run it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.settings import Settings
from workers.endpoints.base import RequestContent
from workers.proxy import proxy_for
from workers.retry import Classification, classify_exception

NO_KEY_WARNING = (
    "warning: no API key is configured (OPENAI_API_KEY or BATCHER_API_KEY): calls go without "
    "Authorization; most relays refuse them"
)
DEFAULT_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0


def normalize_base_url(url: str) -> str:
    """A base URL that ends in the API version: a bare host gets ``/v1`` (relay docs often omit it)."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path == "":
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class ClientConfig:
    """Where to call and how: the provider's base URL, the key, timeouts and pool size."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    max_connections: int = 256
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    header_values: tuple[tuple[str, str], ...] = ()  # settings' values for headers families send
    headers: tuple[tuple[str, str], ...] = ()  # a provider's extra headers (batcher.toml)

    @property
    def provider(self) -> str:
        """A short name of the provider for limiter keys and reports: its host and port."""
        return urlsplit(self.base_url).netloc


def client_config(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S, max_connections: int = 256
) -> ClientConfig:
    """The client configuration from settings, or a ``ConfigError`` saying what to set."""
    raw = settings.checked_base_url()
    if not raw and settings.config_path() is not None:  # batcher.toml: its first provider's
        raw = settings.providers()[0].config.base_url
    if not raw:
        raise ConfigError(
            "no API base URL: set OPENAI_BASE_URL (or BATCHER_BASE_URL) to your relay, e.g. "
            "https://relay.example.com/v1, or run `batcher dev-relay` and point it there"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    base_url = normalize_base_url(raw)
    proxy = proxy_for(base_url, explicit=settings.proxy, env=settings.proxy_env)
    headers = (("anthropic-version", settings.anthropic_version),)
    return ClientConfig(base_url, key, timeout, max_connections, proxy, headers)


class OriginBearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` only to requests for the configured origin."""

    def __init__(self, key: str, base_url: str) -> None:
        self._key = key
        self._origin = httpx.URL(base_url).copy_with(path="/", query=None, fragment=None)

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]  # httpx's generator protocol
        url = request.url
        if (url.scheme, url.host, url.port) == (self._origin.scheme, self._origin.host, self._origin.port):
            request.headers["Authorization"] = f"Bearer {self._key}"
        yield request

    def __repr__(self) -> str:
        return "OriginBearerAuth(key=***)"


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back from one call, before classification."""

    status: int
    headers: Mapping[str, str]  # case-insensitive: httpx's Headers, or aiohttp's CIMultiDictProxy
    content: bytes
    route: str | None = None  # the provider and key that answered, when calls are routed


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A call that got no answer (a timeout, a refused or dropped connection), and what it means."""

    classification: Classification
    route: str | None = None  # the provider and key it went to, when calls are routed


def no_answer(exc: httpx.TransportError) -> NoAnswer:
    """The one place httpx's transport errors become batcher's: the retry policy's reading of them."""
    return NoAnswer(classify_exception(exc))


def get(client: httpx.Client, path: str) -> RawResponse | NoAnswer:
    """A GET through a synchronous client (the relay's billing endpoints), translated the same way."""
    try:
        response = client.get(path)
    except httpx.TransportError as exc:
        return no_answer(exc)
    return RawResponse(response.status_code, response.headers, response.content)


def _fast_transport(config: ClientConfig) -> AiohttpTransport:
    limits = httpx.Limits(
        max_connections=config.max_connections, max_keepalive_connections=config.max_connections
    )
    proxy = httpx.Proxy(config.proxy) if config.proxy else None
    return AiohttpTransport(limits=limits, trust_env=False, proxy=proxy)  # the proxy is decided above


class _Direct:
    """The default transport's aiohttp session, driven without httpx's objects in between.

    httpx-aiohttp turns each ``httpx.Request`` into aiohttp's arguments, and aiohttp's answer
    into an ``httpx.Response`` read through a byte stream of chunks: a third of the CPU of a
    call's HTTP. This makes the same call (the transport's own session, its connector, timeouts
    and proxy, no redirects) and reads the answer whole; aiohttp's errors become httpx's by the
    transport's own mapping, so ``no_answer`` reads them as before. Content-Encoding is undone
    by aiohttp here (by httpx before).
    """

    def __init__(self, transport: AiohttpTransport, timeout: httpx.Timeout) -> None:
        self._transport = transport
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
        )
        proxy = transport.proxy
        self._proxy: dict[str, Any] = {}
        if proxy is not None:
            auth = aiohttp.BasicAuth(*proxy.auth) if proxy.auth else None
            self._proxy = {"proxy": str(proxy.url), "proxy_auth": auth, "proxy_headers": proxy.headers}

    async def send(self, method: str, url: str, headers: httpx.Headers, body: bytes | None) -> RawResponse:
        """One exchange; httpx's ``TransportError`` when no answer came."""
        transport = self._transport
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        with map_aiohttp_exceptions():
            async with transport.client.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
                **self._proxy,
            ) as response:
                content = await response.read()
        # aiohttp's own headers: case-insensitive like httpx's, built already, and looked up in C
        # (an httpx.Headers of them cost 17 us a call, with a lookup 2 us each).
        return RawResponse(response.status, response.headers, content)


JSON = "application/json"


class Caller(Protocol):
    """What the execution core calls: one provider's ``ApiClient``, or a router over several."""

    config: ClientConfig

    async def send(
        self, endpoint: Endpoint, request: RequestContent, *, model: str = ...
    ) -> RawResponse | NoAnswer:
        """POST a family's request for the line's model; the answer, or ``NoAnswer``."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...

    async def __aenter__(self) -> Caller: ...

    async def __aexit__(self, *exc: object) -> None: ...


class ApiClient:
    """One provider's async client; ``call`` posts a body to an endpoint and returns the raw answer.

    Requests go straight to the transport as ``httpx.Request`` objects: the client machinery
    (auth flows, redirect handling, cookies, event hooks) costs more CPU per call than the
    transport itself, and batcher needs none of it. Every URL is the configured base URL (or the
    relay's root, for native and task routes) plus a route path validated at ingest, so the
    ``Authorization`` header (and the key headers a family names: ``x-api-key``,
    ``x-goog-api-key``) can only reach the configured host, and a transport never follows
    redirects (a 3xx comes back as an answer).
    """

    def __init__(self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        timeout = httpx.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT_S, config.timeout))
        self._extensions = {"timeout": timeout.as_dict()}
        self._direct: _Direct | None = None  # tests inject a transport: httpx's objects all the way
        if transport is None:
            fast = _fast_transport(config)
            transport, self._direct = fast, _Direct(fast, timeout)
        self._transport = transport
        self._urls: dict[Endpoint, httpx.URL] = {}
        self._url_texts: dict[Endpoint, str] = {}
        headers = {"Content-Type": JSON, "Accept": "application/json, */*", **dict(config.headers)}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = httpx.Headers(headers)
        self._family_headers: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}

    async def send(
        self, endpoint: Endpoint, request: RequestContent, *, model: str = ""
    ) -> RawResponse | NoAnswer:
        """POST a family's request, with the headers it names (see ``RequestContent``); one
        provider serves every model, so ``model`` (what a router routes by) is not read here."""
        headers = self._headers
        if request.headers or request.key_headers:
            headers = self._with_family_headers(request.headers, request.key_headers)
        return await self.call(endpoint, request.content, content_type=request.content_type, headers=headers)

    def _with_family_headers(
        self, plain: tuple[tuple[str, str], ...], keys: tuple[str, ...]
    ) -> httpx.Headers:
        cache_key = (*plain, *((name, "") for name in keys))
        headers = self._family_headers.get(cache_key)
        if headers is None:
            configured = dict(self.config.header_values)
            headers = httpx.Headers(self._headers)
            for name, value in plain:
                headers[name] = configured.get(name, value)
            for name in keys if self.config.api_key else ():
                headers[name] = self.config.api_key or ""
            self._family_headers[cache_key] = headers
        return headers

    async def call(
        self,
        endpoint: Endpoint,
        body: bytes,
        *,
        content_type: str = JSON,
        headers: httpx.Headers | None = None,
    ) -> RawResponse | NoAnswer:
        """POST the body; the answer, or ``NoAnswer`` for a timeout or a connection error."""
        headers = headers if headers is not None else self._headers
        if content_type != JSON:  # a multipart upload names its boundary
            headers = httpx.Headers(headers)
            headers["Content-Type"] = content_type
        if self._direct is not None:
            return await self._send_direct("POST", endpoint, headers, body)
        request = httpx.Request(
            "POST", self._url(endpoint), headers=headers, content=body, extensions=self._extensions
        )
        return await self._exchange(request)

    async def fetch(self, endpoint: Endpoint) -> RawResponse | NoAnswer:
        """GET a route of the configured relay (a task poll); ``NoAnswer`` as for ``call``."""
        headers = httpx.Headers(self._headers)
        del headers["Content-Type"]
        if self._direct is not None:
            return await self._send_direct("GET", endpoint, headers, None)
        request = httpx.Request("GET", self._url(endpoint), headers=headers, extensions=self._extensions)
        return await self._exchange(request)

    async def _send_direct(
        self, method: str, endpoint: Endpoint, headers: httpx.Headers, body: bytes | None
    ) -> RawResponse | NoAnswer:
        assert self._direct is not None
        url = self._url_texts.get(endpoint)
        if url is None:
            url = self._url_texts[endpoint] = str(self._url(endpoint))
        try:
            return await self._direct.send(method, url, headers, body)
        except httpx.TransportError as exc:
            return no_answer(exc)

    async def _exchange(self, request: httpx.Request) -> RawResponse | NoAnswer:
        """Send one request and read its whole answer; a transport error is ``NoAnswer``."""
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            return no_answer(exc)
        return RawResponse(response.status_code, response.headers, content)

    def _url(self, endpoint: Endpoint) -> httpx.URL:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = httpx.URL(endpoint.url_under(self.config.base_url))
        return url

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ApiClient({self.config.base_url!r}, key=***)"
