"""What a worker process keeps between messages: one event loop, its HTTP clients, its Redis.

Building an aiohttp session and a Redis connection for every chunk of lines would throw away
warm keep-alive connections and cost more than small chunks take to run. So each worker process
keeps one event loop and, per provider configuration, one client whose connections stay open
from one message to the next. A forked pool process builds its own (see ``workers.tasks``).

The loop runs in a thread of its own, all the time: a chunk's last calls go on draining on it
after the task that started them returned (``workers.chunk``), while the next message is taken
and claimed, so the worker never falls silent between two messages. ``drain`` waits for them
(the worker's shutdown). A job's ``Pacing`` (its concurrency gate, the limit found) is kept too,
shared by the executors of its chunks in this process: ``--max-in-flight`` bounds them together,
and the next chunk starts from the concurrency the last one found.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis

from workers.client import ApiClient, ClientConfig
from workers.pacing import Pacing
from workers.ratelimit import Limiter, Limits
from workers.redis_limiter import RedisLimiter, redis_client

T = TypeVar("T")
POOL_CONNECTIONS = 512
KEPT_PACINGS = 16  # jobs whose pacing a process keeps (the most recently used)


class WorkerRuntime:
    """A process's event loop and the long-lived clients that run on it."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._redis_url = redis_url
        self._redis: aioredis.Redis | None = None
        self._clients: dict[ClientConfig, ApiClient] = {}
        self._pacings: OrderedDict[tuple[Any, ...], Pacing] = OrderedDict()
        self._background: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="batcher-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to its end on this process's loop; cancelled if the wait is interrupted
        (a task's soft time limit)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def start(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on this process's loop in the background; ``drain`` waits for it."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the background coroutines; return how many still run."""
        _, running = concurrent.futures.wait(set(self._background), timeout=timeout)
        return len(running)

    def pacing(self, job_id: int, limiter: Limiter, *, concurrency: int, provider: str) -> Pacing:
        """The job's pacing in this process, shared by its chunks (see the module docstring).

        A job resumed with other limits or another ceiling gets a new one.
        """
        limits = getattr(limiter, "limits", None)
        rates = (limits.rpm, limits.tpm) if isinstance(limits, Limits) else (id(limiter),)
        key = (job_id, provider, concurrency, *rates)
        pacing = self._pacings.pop(key, None) or Pacing(limiter, concurrency=concurrency, provider=provider)
        self._pacings[key] = pacing
        while len(self._pacings) > KEPT_PACINGS:
            self._pacings.popitem(last=False)
        return pacing

    def client(self, config: ClientConfig) -> ApiClient:
        """The client for a provider configuration, kept open across messages."""
        key = dataclasses.replace(config, max_connections=POOL_CONNECTIONS)
        if key not in self._clients:
            self._clients[key] = ApiClient(key)
        return self._clients[key]

    def limiter(self, limits: Limits) -> RedisLimiter:
        """A shared-limit view with these limits over the process's one Redis connection pool."""
        if self._redis is None:
            self._redis = redis_client(self._redis_url)
        return RedisLimiter(self._redis, limits)

    def close(self) -> None:
        """Close every client and the loop (worker shutdown; ``drain`` first)."""
        for client in self._clients.values():
            self.run(client.aclose())
        if self._redis is not None:
            self.run(self._redis.aclose())
            self.run(self._redis.connection_pool.disconnect())  # a pool passed in is not closed with it
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
