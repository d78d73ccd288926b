"""A loopback stand-in relay: four OpenAI endpoints, deterministic answers and injectable faults.

It owns the ``batcher dev-relay`` server: routing, faults, the rate limit, the counters and the
ways to run it (a background thread for tests, ``serve`` in a loop, ``run_forever`` for the CLI).
The answers themselves are pure functions of the body in ``batcher.relayanswers``, re-exported
here so tests import everything from one place.

Faults come two ways: at random (``RelayConfig.fault_rate`` over ``faults``, from one seeded RNG)
or forced by a marker in the request, ``[[fault:KIND]]`` (every call) or ``[[fault:KINDxN]]``
(the first N calls of that identical body, then success). The marker is searched in the raw
request bytes, so it may sit in any message, prompt or input text. A body with a marker never
gets a random fault, so marker tests are exact.

Handlers run with aiohttp's handler cancellation on: when a client gives up on a hang, the
handler is cancelled at once instead of sleeping on, and ``RelayServer.stop`` cancels the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web

from batcher.relayanswers import (
    AUDIO_TYPES,
    InvalidBody,
    Usage,
    audio_content_type,
    body_key,
    chat_answer,
    completion_answer,
    count_tokens,
    embedding_answer,
    embedding_inputs,
    expected_audio,
    expected_chat_content,
    expected_chat_contents,
    expected_completion_text,
    expected_embedding,
    message_text,
    speech_answer,
)
from jobs.endpoints import Endpoint

__all__ = [  # the answers are re-exported: tests import everything from here
    "ALL_FAULTS",
    "AUDIO_TYPES",
    "PERMANENT_FAULTS",
    "InvalidBody",
    "Relay",
    "RelayConfig",
    "RelayServer",
    "RelayStats",
    "RunningRelay",
    "audio_content_type",
    "body_key",
    "chat_answer",
    "completion_answer",
    "count_tokens",
    "embedding_answer",
    "embedding_inputs",
    "expected_audio",
    "expected_chat_content",
    "expected_chat_contents",
    "expected_completion_text",
    "expected_embedding",
    "find_marker",
    "message_text",
    "run_forever",
    "serve",
    "speech_answer",
]

T = TypeVar("T")

ALL_FAULTS: tuple[str, ...] = (
    "429",
    "429_empty",
    "500",
    "502",
    "503",
    "hang",
    "reset",
    "truncated",
    "error200",
    "missing_usage",
)
"""The fault kinds a call may draw at random."""

PERMANENT_FAULTS: tuple[str, ...] = ("400", "401", "quota", "404")
"""Kinds only a marker can force: errors a retry does not cure."""

MARKER_FAULTS = frozenset(ALL_FAULTS + PERMANENT_FAULTS)

JSON = "application/json"
_MARKER = re.compile(rb"\[\[fault:([a-z0-9_]+?)(?:x(\d+))?\]\]")


@dataclass(frozen=True)
class RelayConfig:
    """How the relay behaves; swap it at run time with ``RelayServer.set_config``."""

    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ALL_FAULTS
    seed: int = 0
    hang_seconds: float = 30.0
    retry_after: float = 1.0
    rps_limit: int = 0
    api_key: str | None = None
    embedding_dim: int = 8

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(ALL_FAULTS)}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1 (got {self.fault_rate})")
        if self.fault_rate > 0 and not self.faults:
            raise ValueError("fault_rate > 0 needs at least one fault kind")


def find_marker(raw: bytes) -> tuple[str, int | None] | None:
    """The first known ``[[fault:KIND]]`` / ``[[fault:KINDxN]]`` marker: (kind, N or None)."""
    for match in _MARKER.finditer(raw):
        kind = match.group(1).decode()
        if kind in MARKER_FAULTS:
            return kind, int(match.group(2)) if match.group(2) else None
    return None


# --- Canned error answers --------------------------------------------------------------------


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

CANNED: dict[str, tuple[int, bytes, str]] = {
    "429": (429, _error_body("当前分组上游负载已饱和，请稍后再试", "new_api_error", "rate_limit"), JSON),
    "429_empty": (429, b"", "text/plain"),
    "500": (500, _error_body("do request failed: 上游服务错误", "one_api_error", "do_request_failed"), JSON),
    "502": (502, _HTML_502, "text/html"),
    "503": (
        503,
        b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
        "text/plain",
    ),
    "error200": (200, _error_body("upstream error: 上游服务异常", "upstream_error", "bad_response"), JSON),
    "400": (400, _error_body("invalid request (forced by marker)", "invalid_request_error", None), JSON),
    "401": (401, _error_body("无效的令牌", "one_api_error", "invalid_api_key"), JSON),
    "quota": (
        403,
        _error_body("用户额度不足, 剩余额度: $0.00", "one_api_error", "insufficient_user_quota"),
        JSON,
    ),
    "404": (404, _error_body("Invalid URL (forced by marker)", "invalid_request_error", "not_found"), JSON),
}
"""Faults that are a fixed answer: kind → (status, body, content type)."""


def _seconds(value: float) -> dict[str, str]:
    """Retry-After in seconds and retry-after-ms, as relays and OpenAI send them."""
    seconds = f"{value:.3f}".rstrip("0").rstrip(".")
    return {"Retry-After": seconds, "retry-after-ms": str(round(value * 1000))}


# --- Counters --------------------------------------------------------------------------------


@dataclass
class RelayStats:
    """What the relay saw; ``snapshot`` is what ``GET /_stats`` returns."""

    calls: int = 0
    served: int = 0
    rate_limited: int = 0
    by_status: Counter[int | str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    usage: Counter[str] = field(default_factory=Counter)
    reported_usage: Counter[str] = field(default_factory=Counter)
    per_key: Counter[str] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)
    answered_per_second: Counter[int] = field(default_factory=Counter)

    def add_served(self, usage: Usage, *, reported: bool = False) -> None:
        """Count one answer whose work was done, with its usage even if the client never sees it.

        ``reported``: the answer carried that usage to the client intact (what it can confirm).
        """
        self.served += 1
        self.usage.update(usage)
        if reported:
            self.reported_usage.update(usage)

    def snapshot(self) -> dict[str, Any]:
        """Plain dicts: status codes and seconds stay ints here; JSON makes every key a string."""
        keys = ("prompt_tokens", "completion_tokens", "total_tokens", "characters")
        usage = {k: self.usage[k] for k in keys}
        return {
            "calls": self.calls,
            "served": self.served,
            "rate_limited": self.rate_limited,
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "usage": usage,
            "reported_usage": {k: self.reported_usage[k] for k in keys},
            "per_key": dict(self.per_key),
            "per_second": dict(self.per_second),
            "answered_per_second": dict(self.answered_per_second),
        }


# --- The server ------------------------------------------------------------------------------


@dataclass
class _Call:
    """One request in flight: what every response needs to be labelled and counted."""

    request: web.Request
    request_id: str
    window: int
    key: str = ""


@dataclass
class _Served:
    """A successful answer before any fault bends it."""

    payload: dict[str, Any] | bytes
    usage: Usage
    content_type: str

    def encode(self, *, with_usage: bool = True) -> bytes:
        if isinstance(self.payload, bytes):
            return self.payload
        if with_usage:
            return orjson.dumps(self.payload)
        return orjson.dumps({k: v for k, v in self.payload.items() if k != "usage"})


class Relay:
    """The relay's state and handlers, bound to one event loop."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.stats = RelayStats()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)
        self._marker_calls: Counter[str] = Counter()
        self._window = (0, 0)  # (epoch second, requests admitted in it) for rps_limit
        self.inflight: set[asyncio.Task[Any]] = set()

    def set_config(self, config: RelayConfig) -> None:
        """Use a new config from the next request on; the fault RNG restarts from its seed."""
        self.config = config
        self._rng = random.Random(config.seed)

    def reset(self) -> None:
        """Zero every counter, marker counts included, and restart the fault RNG."""
        self.stats = RelayStats()
        self._marker_calls.clear()
        self._rng = random.Random(self.config.seed)

    def app(self) -> web.Application:
        """The aiohttp application: four endpoints plus ``/_stats`` and ``/_reset``."""
        app = web.Application(client_max_size=64 * 1024**2)
        for endpoint in Endpoint:
            app.router.add_post(endpoint.value, self._handler(endpoint))
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_reset", self._reset)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.stats.snapshot(), option=orjson.OPT_NON_STR_KEYS), content_type=JSON
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type=JSON)

    def _handler(self, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self.inflight.add(task)
            try:
                return await self._handle(request, endpoint)
            finally:
                self.inflight.discard(task)

        return handle

    async def _handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        raw = await request.read()
        call = self._receive(request)
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            call.key = body_key(body)
            self.stats.per_key[call.key] += 1
        refusal = self._refusal(call)
        if refusal is not None:
            return refusal
        try:
            served = self._build(endpoint, body)
        except InvalidBody as exc:
            return self._respond(call, 400, _error_body(str(exc), "invalid_request_error", None, exc.param))
        fault = self._pick_fault(call, raw)
        if fault is None:
            return self._serve(call, served)
        self.stats.by_fault[fault] += 1
        return await self._fault(call, fault, served)

    def _receive(self, request: web.Request) -> _Call:
        now = int(time.time())
        self.stats.calls += 1
        self.stats.per_second[now] += 1
        return _Call(request, f"req_{next(self._ids)}", now)

    def _build(self, endpoint: Endpoint, body: Any) -> _Served:
        if not isinstance(body, dict):
            raise InvalidBody("the request body must be a JSON object")
        if endpoint is Endpoint.CHAT:
            return _Served(*chat_answer(body), JSON)
        if endpoint is Endpoint.COMPLETIONS:
            return _Served(*completion_answer(body), JSON)
        if endpoint is Endpoint.EMBEDDINGS:
            return _Served(*embedding_answer(body, self.config.embedding_dim), JSON)
        audio, usage = speech_answer(body)
        return _Served(audio, usage, audio_content_type(body))

    def _refusal(self, call: _Call) -> web.Response | None:
        """A 401 for a missing or wrong key, or a 429 past ``rps_limit`` in this second."""
        key = self.config.api_key
        auth = call.request.headers.get("Authorization", "")
        if key is not None and auth != f"Bearer {key}":
            message = "无效的令牌" if auth else "未提供令牌"
            return self._respond(call, 401, _error_body(message, "one_api_error", "invalid_api_key"))
        now = time.time()
        call.window = int(now)
        if self._admit(call.window):
            return None
        self.stats.rate_limited += 1
        body = _error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
        return self._respond(call, 429, body, headers=_seconds(call.window + 1 - now))

    def _admit(self, second: int) -> bool:
        limit = self.config.rps_limit
        if limit <= 0:
            return True
        window, admitted = self._window
        admitted = admitted if window == second else 0
        if admitted >= limit:
            return False
        self._window = (second, admitted + 1)
        return True

    def _pick_fault(self, call: _Call, raw: bytes) -> str | None:
        marker = find_marker(raw)
        if marker is not None:
            kind, times = marker
            self._marker_calls[call.key] += 1
            return kind if times is None or self._marker_calls[call.key] <= times else None
        config = self.config
        if config.fault_rate > 0 and self._rng.random() < config.fault_rate:
            return self._rng.choice(config.faults)
        return None

    async def _fault(self, call: _Call, kind: str, served: _Served) -> web.StreamResponse:
        if kind == "hang":
            return await self._hang(call, served)
        if kind == "reset":
            self.stats.by_status["reset"] += 1
            return await self._abort(call)
        if kind == "truncated":
            return await self._truncated(call, served)
        if kind == "missing_usage":
            return self._serve(call, served, with_usage=False)
        status, body, content_type = CANNED[kind]
        headers = _seconds(self.config.retry_after) if kind == "429" else None
        return self._respond(call, status, body, content_type, headers)

    async def _hang(self, call: _Call, served: _Served) -> web.StreamResponse:
        try:
            await asyncio.sleep(self.config.hang_seconds)
        except asyncio.CancelledError:
            # The client gave up (or the relay stopped), but the upstream work was under way and a
            # real relay bills it: it counts as served, without usage the client could see.
            self.stats.by_status["hang"] += 1
            self.stats.add_served(served.usage)
            raise
        return self._serve(call, served)

    async def _abort(self, call: _Call) -> web.StreamResponse:
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        # Losing the connection cancels this handler (handler_cancellation); the sleep only waits for it.
        await asyncio.sleep(self.config.hang_seconds)
        return web.Response(status=499)

    async def _truncated(self, call: _Call, served: _Served) -> web.StreamResponse:
        self.stats.add_served(served.usage)
        body = served.encode()
        if served.content_type == JSON:
            return self._respond(call, 200, body[: len(body) // 2])
        # Audio cut short is only detectable when the length promised more than arrives.
        self._count(call, 200)
        response = web.StreamResponse(headers={"x-request-id": call.request_id})
        response.content_type = served.content_type
        response.content_length = len(body)
        await response.prepare(call.request)
        await response.write(body[: len(body) // 2])
        return await self._abort(call)

    def _serve(self, call: _Call, served: _Served, *, with_usage: bool = True) -> web.Response:
        # Speech carries no usage in its body: its characters are what the client counts itself.
        reported = with_usage or served.content_type != JSON
        self.stats.add_served(served.usage, reported=reported)
        return self._respond(call, 200, served.encode(with_usage=with_usage), served.content_type)

    def _respond(
        self,
        call: _Call,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._count(call, status)
        response = web.Response(status=status, body=body, content_type=content_type, headers=headers)
        response.headers["x-request-id"] = call.request_id
        return response

    def _count(self, call: _Call, status: int) -> None:
        self.stats.by_status[status] += 1
        if 200 <= status < 300:
            self.stats.answered_per_second[call.window] += 1


# --- Running it ------------------------------------------------------------------------------


@dataclass
class RunningRelay:
    """A relay listening inside the current event loop; ``close`` it when done."""

    relay: Relay
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        """Cancel handlers still running (hangs), then stop listening and close connections."""
        tasks = [t for t in self.relay.inflight if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.cleanup()


async def serve(config: RelayConfig, host: str = "127.0.0.1", port: int = 0) -> RunningRelay:
    """Start a relay in the running loop; port 0 picks a free port (see ``.url``)."""
    relay = Relay(config)
    runner = web.AppRunner(relay.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return RunningRelay(relay, runner, f"http://{host}:{bound}/v1")


class RelayServer:
    """A relay on its own thread and event loop, for synchronous tests: ``with RelayServer() as r:``."""

    def __init__(self, config: RelayConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._config = config or RelayConfig()
        self._host, self._port = host, port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running: RunningRelay | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL including ``/v1``, e.g. ``http://127.0.0.1:54321/v1``."""
        return self._live().url

    def start(self) -> RelayServer:
        """Start the thread and return once the port is listening."""
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="devrelay", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    async def _main(self) -> None:
        try:
            self._running = await serve(self._config, self._host, self._port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._running.close()

    def stop(self) -> None:
        """Cancel hanging handlers, close every connection and join the thread."""
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
            self._loop = None

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_stats`` returns them (but with int status and second keys)."""
        return self._on_loop(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        return self._live().relay.stats.snapshot()

    def reset(self) -> None:
        """Zero the counters and marker counts (``POST /_reset``)."""
        self._on_loop(self._live().relay.reset)

    def set_config(self, config: RelayConfig) -> None:
        """Change latency, faults, limits or key from the next request on."""
        self._on_loop(lambda: self._live().relay.set_config(config))

    def _live(self) -> RunningRelay:
        if self._running is None or self._loop is None:
            raise RuntimeError("the relay is not running: use `with RelayServer() as relay:` or .start()")
        return self._running

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the relay's loop: the counters are only touched from that thread."""

        async def run() -> T:
            return fn()

        self._live()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_forever(config: RelayConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until Ctrl-C, after printing the URL and the environment to point batcher at it."""
    try:
        asyncio.run(_forever(config, host, port))
    except KeyboardInterrupt:
        print("dev relay stopped")


async def _forever(config: RelayConfig, host: str, port: int) -> None:
    running = await serve(config, host, port)
    try:
        print(f"dev relay listening on {running.url}  (stats: {running.url.removesuffix('/v1')}/_stats)")
        print(f"  export OPENAI_BASE_URL={running.url} OPENAI_API_KEY={config.api_key or 'sk-dev'}")
        await asyncio.Event().wait()
    finally:
        await running.close()
