"""The stand-in relay's task routes: one gate for all of them, then each family's handler.

A task call goes through what every call of the relay goes through (``batcher.devrelay.relay``):
the key (``Authorization``, or MJ's ``mj-api-secret``), the limits and the in-flight cap, the
latency, and the faults. Then:

- a canned fault (429, 5xx, error in a 200…) answers instead of the relay: nothing recorded;
- otherwise the family's handler runs (``tasks_mj``, ``tasks_suno``, ``tasks_video``): a submit
  records and charges its task there, with the task faults the call drew (``TASK_FAULTS``);
- then ``hang`` / ``submit_timeout`` hold the answer for ``hang_seconds`` and drop the connection,
  ``reset`` / ``submit_reset`` drop it at once, ``truncated`` cuts it in half: the relay kept the
  task and the charge, the client never learns its id (the unknown outcome of issue 14).

Handlers are plain functions of a ``TaskCall`` returning a ``Reply``; the gate owns the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from batcher.devrelay.answers import body_key
from batcher.devrelay.config import RelayConfig
from batcher.devrelay.faults import CANNED, HTML_504, JSON, TASK_FAULTS
from batcher.devrelay.forms import read_body
from batcher.devrelay.routes import Served
from batcher.devrelay.tasks_files import FILES_PATH, content_type, file_bytes
from batcher.devrelay.tasks_table import TaskTable

if TYPE_CHECKING:
    from batcher.devrelay.relay import Relay, _Call

LOST_ANSWER = frozenset({"hang", "submit_timeout", "reset", "submit_reset", "truncated", "submit_504"})
_NOTHING = Served(b"", {}, JSON)


@dataclass
class TaskCall:
    """What a family's handler sees of one call."""

    body: dict[str, Any]
    owner: str  # the key it came with: tasks are the caller's own
    match: Mapping[str, str]
    fault: str | None  # the task fault it drew, if any (``TASK_FAULTS``)
    table: TaskTable
    config: RelayConfig
    files_origin: str  # where result files are served (another origin than the API)
    api_origin: str  # the relay's own origin (``/v1/videos/{id}/content``)
    raw: bytes = b""


@dataclass
class Reply:
    """A handler's answer: JSON payload (or bytes), status, headers."""

    payload: Any
    status: int = 200
    headers: dict[str, str] | None = None
    content_type: str = JSON

    def encode(self) -> bytes:
        return self.payload if isinstance(self.payload, bytes) else orjson.dumps(self.payload)


TaskHandler = Callable[[TaskCall], Reply]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One task route: method, path (aiohttp pattern) and handler."""

    method: str
    path: str
    handler: TaskHandler
    public: bool = False  # no key, no limits, no faults (new-api's MJ image proxy)


def owner_key(request: web.Request) -> str:
    """The key a call came with, as new-api reads it: Bearer, else MJ's ``mj-api-secret``."""
    auth = request.headers.get("Authorization", "")
    if auth in ("", "midjourney-proxy", "Bearer midjourney-proxy"):
        return request.headers.get("mj-api-secret", "")
    return auth.removeprefix("Bearer ")


class TaskGate:
    """Registers the task routes on the relay's app and runs each call through the gate."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def register(self, app: web.Application, routes: list[Route]) -> None:
        for route in routes:
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_get(FILES_PATH + "/{name}", self._held(self._file))

    def _handler(self, route: Route) -> Handler:
        async def gated(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, route.handler)

        async def public(request: web.Request) -> web.StreamResponse:
            reply = route.handler(self._task_call(self.relay._receive(request), b"", {}, None))
            return web.Response(status=reply.status, body=reply.encode(), content_type=reply.content_type)

        return self._held(public if route.public else gated)

    def _held(self, handle: Handler) -> Handler:
        """``handle``, counted in flight: ``RelayServer.stop`` cancels it if it still runs (a hang)."""

        async def held(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self.relay.inflight.add(task)
            try:
                return await handle(request)
            finally:
                self.relay.inflight.discard(task)

        return held

    async def _handle(self, request: web.Request, handler: TaskHandler) -> web.StreamResponse:
        relay = self.relay
        raw, body = await read_body(request)
        call = relay._receive(request)
        if isinstance(body, dict):
            call.key = body_key(body)
            relay.stats.per_key[call.key] += 1
        refusal = relay._unauthorized(call)
        if refusal is not None:
            return refusal
        limited = relay.enforcer.admit(call.api_key, 0, time.time())
        if limited is not None:
            return relay._refuse(call, limited)
        relay.stats.peak_in_flight = max(relay.stats.peak_in_flight, relay.enforcer.in_flight)
        try:
            return await self._admitted(call, raw, body, handler)
        finally:
            relay.enforcer.leave(time.time())

    async def _admitted(self, call: _Call, raw: bytes, body: Any, handler: TaskHandler) -> web.StreamResponse:
        relay = self.relay
        if relay.config.latency > 0:
            await asyncio.sleep(relay.config.latency)
        call.headers = relay.enforcer.headers(call.api_key, time.time())
        fault = relay._pick_fault(call, raw)
        if fault is not None:
            relay.stats.by_fault[fault] += 1
        if fault in CANNED or fault == "redirect":
            return await relay._fault(call, fault, _NOTHING)
        reply = handler(self._task_call(call, raw, body, fault))
        if fault in LOST_ANSWER:
            return await self._lost(call, fault, reply)
        return relay._respond(call, reply.status, reply.encode(), reply.content_type, reply.headers)

    def _task_call(self, call: _Call, raw: bytes, body: Any, fault: str | None) -> TaskCall:
        relay = self.relay
        return TaskCall(
            body=body if isinstance(body, dict) else {},
            owner=owner_key(call.request),
            match=call.request.match_info,
            fault=fault if fault in TASK_FAULTS else None,
            table=relay.tasks,
            config=relay.config,
            files_origin=relay.origin,
            api_origin=f"{call.request.scheme}://{call.request.host}",
            raw=raw,
        )

    async def _lost(self, call: _Call, fault: str, reply: Reply) -> web.StreamResponse:
        """The answer never arrives whole: held then dropped, dropped at once, or cut."""
        relay = self.relay
        if fault == "truncated":
            body = reply.encode()
            return relay._respond(call, reply.status, body[: len(body) // 2], reply.content_type)
        if fault == "submit_504":  # a proxy in front gave up waiting; the relay went on
            return relay._respond(call, 504, HTML_504, "text/html")
        if fault in ("hang", "submit_timeout"):
            relay.stats.by_status["hang"] += 1
            await asyncio.sleep(relay.config.hang_seconds)
        else:
            relay.stats.by_status["reset"] += 1
        return await relay._abort(call)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        """A task's result file; never asks for a key (a CDN does not know it)."""
        relay = self.relay
        relay.stats.file_requests.append(dict(request.headers))
        name = request.match_info["name"]
        data = file_bytes(name)
        if name.startswith("slow-"):
            await asyncio.sleep(relay.config.hang_seconds)
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=504)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type=content_type(name))
