"""The stand-in relay's routes and handlers: authentication, limits, answers and faults.

A call is checked at arrival, before the upstream latency, as real relays do: the key, then the
limits and the in-flight cap (``enforce``); a refused call is answered at once.

Handlers run with aiohttp's handler cancellation on: when a client gives up on a hang, the
handler is cancelled at once instead of sleeping on, and ``RelayServer.stop`` cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from batcher.devrelay.answers import (
    InvalidBody,
    Usage,
    body_key,
    chat_answer,
    completion_answer,
    embedding_answer,
)
from batcher.devrelay.billing import BillingRoutes, unserved
from batcher.devrelay.claude_answers import claude_answer
from batcher.devrelay.config import RelayConfig
from batcher.devrelay.enforce import Enforcer, Refusal
from batcher.devrelay.envelopes import anthropic_error, native_envelope
from batcher.devrelay.faults import (
    CANNED,
    JSON,
    TASK_FAULTS,
    WINDOW_HEADERS,
    ZERO_USAGE,
    error_body,
    find_marker,
    retry_after_headers,
)
from batcher.devrelay.forms import read_body
from batcher.devrelay.media import (
    NotImplementedRoute,
    image_answer,
    served_image,
    transcription_answer,
    variation_answer,
)
from batcher.devrelay.openai_answers import moderation_answer, responses_answer
from batcher.devrelay.routes import (
    Builder,
    PathBuilder,
    Served,
    as_object,
    key_header,
    path_builders,
    speech,
    streamed,
)
from batcher.devrelay.stats import RelayStats
from batcher.devrelay.streams import SSE, cut, overloaded
from batcher.devrelay.tasks_gate import TaskGate
from batcher.devrelay.tasks_routes import task_routes
from batcher.devrelay.tasks_table import TaskTable


@dataclass
class _Call:
    """One request in flight: what every response needs to be labelled and counted."""

    request: web.Request
    request_id: str
    window: int
    key: str = ""
    api_key: str = ""
    headers: dict[str, str] | None = None


MJ_PROXY_AUTH = ("midjourney-proxy", "Bearer midjourney-proxy")  # new-api then reads mj-api-secret


class Relay:
    """The relay's state and handlers, bound to one event loop."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.stats = RelayStats()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)
        self._marker_calls: Counter[str] = Counter()
        self.enforcer = Enforcer(config.rules)
        self.inflight: set[asyncio.Task[Any]] = set()
        self._hangs = asyncio.Event()  # set by ``release_hangs``: the held calls answer now
        self.origin = ""  # http://host:port once serving: where image URLs point
        self._task_ids = itertools.count(1)  # task ids stay unique across resets
        self.tasks = self._task_table()

    def _task_table(self) -> TaskTable:
        config = self.config
        return TaskTable(seconds=config.task_seconds, timeout=config.task_timeout, ids=self._task_ids,
                         seed=config.seed)  # fmt: skip

    def set_config(self, config: RelayConfig) -> None:
        """Use a new config from the next request on; the fault RNG and the limits start afresh."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._new_enforcer()
        self.tasks.seconds, self.tasks.timeout = config.task_seconds, config.task_timeout

    def reset(self) -> None:
        """Zero every counter, marker counts and limits included, and restart the fault RNG."""
        self.stats = RelayStats()
        self._marker_calls.clear()
        self.tasks = self._task_table()  # tasks and their billing are forgotten too
        self._rng = random.Random(self.config.seed)
        self._new_enforcer()

    def _new_enforcer(self) -> None:
        # Calls in flight keep counting against the cap they were admitted under.
        in_flight = self.enforcer.in_flight
        self.enforcer = Enforcer(self.config.rules, in_flight=in_flight)

    def app(self) -> web.Application:
        """The aiohttp application: the routes it serves plus ``/_stats`` and ``/_reset``."""
        app = web.Application(client_max_size=64 * 1024**2)
        for route, build in self._builders().items():
            app.router.add_post(route, self._handler(build))
        for route, path_build in path_builders().items():
            app.router.add_post(route, self._path_handler(path_build))
        BillingRoutes(self).register(app)
        TaskGate(self).register(app, task_routes())
        app.router.add_get("/_files/{name}", self._file)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_reset", self._reset)
        return app

    def snapshot(self) -> dict[str, Any]:
        """The counters with the limits' own counts (``enforce``) and the tasks with their billing."""
        return self.stats.snapshot() | {"limits": self.enforcer.counts(), "tasks": self.tasks.snapshot()}

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.snapshot(), option=orjson.OPT_NON_STR_KEYS), content_type=JSON
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type=JSON)

    def _handler(self, build: Builder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self.inflight.add(task)
            try:
                return await self._handle(request, build)
            finally:
                self.inflight.discard(task)

        return handle

    def _path_handler(self, build: PathBuilder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A handler for a patterned route: its builder also gets the route's parts (the model)."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handler(lambda body: build(request.match_info, body))(request)

        return handle

    async def _handle(self, request: web.Request, build: Builder) -> web.StreamResponse:
        raw, body = await read_body(request)
        call = self._receive(request)
        if isinstance(body, dict):
            call.key = body_key(body)
            self.stats.per_key[call.key] += 1
        refusal = self._unauthorized(call)
        if refusal is None and (answer := unserved(self.config, self.stats.served, body)) is not None:
            refusal = self._respond(call, *answer)  # a model it does not serve, a key out of quota
        if refusal is not None:
            return refusal
        try:
            served: Served | InvalidBody = streamed(
                build(as_object(body)), request.path, _object_or_empty(body)
            )
        except InvalidBody as exc:
            served = exc
        tokens = served.usage.get("total_tokens", 0) if isinstance(served, Served) else 0
        limited = self.enforcer.admit(call.api_key, tokens, time.time())
        if limited is not None:
            return self._refuse(call, limited)
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.enforcer.in_flight)
        try:
            return await self._admitted(call, raw, served)
        finally:
            self.enforcer.leave(time.time())

    async def _admitted(self, call: _Call, raw: bytes, served: Served | InvalidBody) -> web.StreamResponse:
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        call.headers = self.enforcer.headers(call.api_key, time.time())
        if isinstance(served, NotImplementedRoute):
            return self._respond(call, served.status, served.payload)
        if isinstance(served, InvalidBody):
            exc = served
            return self._respond(call, 400, error_body(str(exc), "invalid_request_error", None, exc.param))
        fault = self._pick_fault(call, raw)
        if fault is None or fault in TASK_FAULTS:  # an async task's fault: not on this route
            return self._serve(call, served)
        self.stats.by_fault[fault] += 1
        return await self._fault(call, fault, served)

    def _receive(self, request: web.Request) -> _Call:
        now = int(time.time())
        self.stats.calls += 1
        self.stats.per_second[now] += 1
        return _Call(request, f"req_{next(self._ids)}", now)

    def _builders(self) -> dict[str, Builder]:
        """The answer each route serves, by path (one entry per route the stand-in relay knows)."""
        dim = self.config.embedding_dim
        return {
            "/v1/chat/completions": lambda body: Served(*chat_answer(body), JSON),
            "/v1/completions": lambda body: Served(*completion_answer(body), JSON),
            "/v1/embeddings": lambda body: Served(*embedding_answer(body, dim), JSON),
            "/v1/audio/speech": speech,
            "/v1/audio/transcriptions": lambda body: Served(*transcription_answer(body, task="transcribe")),
            "/v1/audio/translations": lambda body: Served(*transcription_answer(body, task="translate")),
            "/v1/images/generations": lambda body: Served(*self._images(body, "generation")),
            "/v1/images/edits": lambda body: Served(*self._images(body, "edit")),
            "/v1/images/variations": lambda body: Served(*variation_answer(body)),
            "/v1/responses": lambda body: Served(*responses_answer(body), JSON),
            "/v1/moderations": lambda body: Served(*moderation_answer(body), JSON, usage_key=None),
            "/v1/messages": lambda body: Served(*claude_answer(body), JSON),
        }

    def _images(self, body: dict[str, Any], task: str) -> tuple[dict[str, Any], Usage, str]:
        return image_answer(body, task=task, origin=self.origin)

    async def _file(self, request: web.Request) -> web.Response:
        """An image an answer's URL names; never asks for a key (a CDN does not know it)."""
        self.stats.file_requests.append(dict(request.headers))
        data = served_image(request.match_info["name"])
        return web.Response(status=404) if data is None else web.Response(body=data, content_type="image/png")

    def _unauthorized(self, call: _Call) -> web.Response | None:
        """A 401 for a missing or wrong key: Bearer, or a native route's own key header.

        As new-api: ``/v1/messages`` also takes ``x-api-key`` (and needs ``anthropic-version``),
        ``/v1beta`` also ``x-goog-api-key``; a key header that is sent must be right too.
        """
        headers = call.request.headers
        native = key_header(call.request.path)
        auth = headers.get("Authorization", "")
        offered = [auth.removeprefix("Bearer ")] if auth and auth not in MJ_PROXY_AUTH else []
        if native and native in headers and not (native == "mj-api-secret" and offered):
            offered.append(headers[native])  # MJ's header counts only without a Bearer key
        call.api_key = offered[0] if offered else ""
        key = self.config.api_key
        if key is not None and (not offered or any(k != key for k in offered)):
            message = "无效的令牌" if offered else "未提供令牌"
            return self._respond(call, 401, error_body(message, "one_api_error", "invalid_api_key"))
        if call.request.path == "/v1/messages" and "anthropic-version" not in headers:
            body = anthropic_error("invalid_request_error", "anthropic-version: header is required")
            return self._respond(call, 400, body)
        return None

    def _refuse(self, call: _Call, refusal: Refusal) -> web.Response:
        """A 429 past a limit or a 503 past the in-flight cap, counted as such."""
        if refusal.kind == "rate_limited":
            self.stats.rate_limited += 1
        else:
            self.stats.overloaded += 1
        call.headers = self.enforcer.headers(call.api_key, time.time())
        return self._respond(call, refusal.status, refusal.body, refusal.content_type, refusal.headers)

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

    async def _fault(self, call: _Call, kind: str, served: Served) -> web.StreamResponse:
        if kind == "hang":
            return await self._hang(call, served)
        if kind == "reset":
            self.stats.by_status["reset"] += 1
            return await self._abort(call)
        if kind == "truncated":
            return await self._truncated(call, served)
        if kind in ("stream_cut", "stream_overload") and served.content_type == SSE:
            self.stats.add_served(served.usage)
            stream = served.encode()
            broken = cut(stream) if kind == "stream_cut" else overloaded(call.request.path, stream)
            return self._respond(call, 200, broken, SSE)
        if kind in ("missing_usage", "zero_usage", "redirect", "stream_cut", "stream_overload"):
            return self._bent(call, kind, served)
        status, body, content_type = CANNED[kind]
        headers = retry_after_headers(self.config.retry_after) if kind in ("429", "429_window") else None
        if kind == "429_window" and headers is not None:
            headers |= WINDOW_HEADERS
        return self._respond(call, status, body, content_type, headers)

    def release_hangs(self) -> None:
        """Answer the calls a hang holds now (a test's cue, not a timer); later hangs hold again."""
        released, self._hangs = self._hangs, asyncio.Event()
        released.set()

    async def _hang(self, call: _Call, served: Served) -> web.StreamResponse:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hangs.wait(), self.config.hang_seconds)
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

    async def _truncated(self, call: _Call, served: Served) -> web.StreamResponse:
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

    def _bent(self, call: _Call, kind: str, served: Served) -> web.Response:
        """A served answer with its usage dropped or zeroed, or a redirect to the same path on https."""
        if kind in ("stream_cut", "stream_overload"):  # an answer that was not streamed cannot be cut
            return self._serve(call, served)
        if kind == "redirect":
            location = "https://" + call.request.host + call.request.path
            return self._respond(call, 301, b"", "text/html", {"Location": location})
        if kind == "missing_usage" or isinstance(served.payload, bytes) or served.usage_key is None:
            return self._serve(call, served, with_usage=kind != "missing_usage")  # speech: no usage to zero
        self.stats.add_served(served.usage)
        body = orjson.dumps(served.payload | {served.usage_key: ZERO_USAGE})
        return self._respond(call, 200, body, served.content_type)

    def _serve(self, call: _Call, served: Served, *, with_usage: bool = True) -> web.Response:
        # Speech carries no usage in its body: its characters are what the client counts itself.
        reported = (with_usage and served.usage_key is not None) or served.content_type != JSON
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
        if content_type == JSON:
            body = native_envelope(call.request.path, status, body)
        response = web.Response(status=status, body=body, content_type=content_type, headers=headers)
        response.headers["x-request-id"] = call.request_id
        if call.headers:
            response.headers.update(call.headers)
        return response

    def _count(self, call: _Call, status: int) -> None:
        self.stats.by_status[status] += 1
        if 200 <= status < 300:
            self.stats.answered_per_second[call.window] += 1


# --- Running it ------------------------------------------------------------------------------


def _object_or_empty(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}
