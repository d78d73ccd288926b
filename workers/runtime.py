"""What a worker process keeps between messages: one event loop, its HTTP clients, its Redis.

Building an aiohttp session and a Redis connection for every chunk of lines would throw away
warm keep-alive connections and cost more than small chunks take to run. So each worker process
keeps one event loop and, per provider configuration, one client whose connections stay open
from one message to the next. A forked pool process builds its own (see ``workers.tasks``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis

from workers.client import ApiClient, ClientConfig
from workers.ratelimit import Limits
from workers.redis_limiter import RedisLimiter, redis_client

T = TypeVar("T")
POOL_CONNECTIONS = 512


class WorkerRuntime:
    """A process's event loop and the long-lived clients that run on it."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._redis_url = redis_url
        self._redis: aioredis.Redis | None = None
        self._clients: dict[ClientConfig, ApiClient] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to its end on this process's loop."""
        return self.loop.run_until_complete(coroutine)

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
        """Close every client and the loop (worker shutdown)."""
        for client in self._clients.values():
            self.run(client.aclose())
        if self._redis is not None:
            self.run(self._redis.aclose())
        self.loop.close()
