"""The shared rate limiter: one RPM/TPM pace for every worker on every machine, kept in Redis.

The same GCRA as the in-process limiter (``workers.ratelimit``), run as a Lua script so that each
reservation is atomic, and timed by Redis's own clock (``TIME``) so that workers whose clocks
disagree still share one timeline. The state of a key is one small hash (request TAT, token TAT,
cooldown end, probe gate): O(1) per call at any limit, where a moving-window log would hold one
entry per token (2M entries a minute at 2M TPM).

Cooldown: a 429's Retry-After pauses the key for every worker. When it ends, one call goes first
as a probe while the others wait (a half-open gate, at most ``PROBE_WINDOW_S``); if the probe is
answered 429 again the pause starts over, so a storm costs one call per Retry-After per key,
not one per worker. Any other answer to the probe opens the gate.

If Redis cannot be reached the limiter fails closed: it raises ``LimiterError`` and no call is
made without a reservation.

Why not a library: ``limits``' moving and sliding windows count requests but cannot reserve a
variable token amount and give back the unused part after the call, nor hold a shared cooldown;
the GCRA is twenty lines of Lua and keeps both limits in one round trip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobs.errors import LimiterError
from workers.ratelimit import Limits, Permit

KEY_PREFIX = "batcher:rl:"
PROBE_WINDOW_S = 10.0
STATE_TTL_S = 3600

# KEYS[1] = state hash; ARGV = tokens, rpm, tpm, burst, probe window, ttl
# Returns the seconds to wait (as a string: Lua numbers become integers on the way out).
# A negative result means "not yet: ask again after -result seconds" (cooldown or gate closed).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local burst, probe_window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'p', 'g', 'probe')
local rtat, ttat = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local paused, gate, probe = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
if now < paused then
  return string.format('%.6f', -(paused - now))
end
if now < gate then
  if probe == 1 then
    return string.format('%.6f', -math.min(gate - now, 0.25))
  end
  redis.call('HSET', KEYS[1], 'probe', 1)
end
local wait = 0
if rpm > 0 then
  local rate = rpm / 60
  local new = math.max(rtat, now) + 1 / rate
  wait = math.max(wait, new - now - math.max(burst, 1 / rate))
  redis.call('HSET', KEYS[1], 'r', string.format('%.6f', new))
end
if tpm > 0 and tokens > 0 then
  local rate = tpm / 60
  local new = math.max(ttat, now) + tokens / rate
  wait = math.max(wait, new - now - math.max(burst, tokens / rate))
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', new))
end
redis.call('EXPIRE', KEYS[1], ttl)
return string.format('%.6f', math.max(wait, 0))
"""

# ARGV = tokens to give back (negative: take more), tpm
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local refund, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and refund ~= 0 then
  local ttat = tonumber(redis.call('HGET', KEYS[1], 't')) or now
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', ttat - refund / (tpm / 60)))
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
if now >= paused then
  redis.call('HDEL', KEYS[1], 'g', 'probe')
end
return 1
"""

# ARGV = seconds, probe window, ttl
_COOLDOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
if untl > paused then
  local gate = untl + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'p', string.format('%.6f', untl), 'g', string.format('%.6f', gate))
end
redis.call('HDEL', KEYS[1], 'probe')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


REDIS_POOL_SIZE = 64


def redis_client(url: str) -> aioredis.Redis:
    """An asyncio Redis client whose callers queue for a connection when all are busy.

    redis-py's default pool refuses the 101st concurrent command ("Too many connections"); with
    hundreds of calls in flight asking the limiter at once, waiting briefly is right, failing is not.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_POOL_SIZE, timeout=10, socket_connect_timeout=5, socket_timeout=10
    )
    return aioredis.Redis(connection_pool=pool)


class RedisLimiter:
    """The ``Limiter`` shared by all workers through one Redis; see the module docstring."""

    def __init__(self, client: aioredis.Redis, limits: Limits, *, prefix: str = KEY_PREFIX) -> None:
        self.client, self.limits, self.prefix = client, limits, prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._cooldown = client.register_script(_COOLDOWN)

    @classmethod
    def from_url(cls, url: str, limits: Limits) -> RedisLimiter:
        """A limiter on the Redis at ``url`` (``BATCHER_REDIS_URL``)."""
        return cls(redis_client(url), limits)

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait until the shared pace lets a call with ``tokens`` go, and reserve its place."""
        args = [
            tokens,
            self.limits.rpm or 0,
            self.limits.tpm or 0,
            self.limits.burst,
            PROBE_WINDOW_S,
            STATE_TTL_S,
        ]
        while True:
            wait = float(await self._run(self._acquire, key, args))
            if wait >= 0:
                break
            await asyncio.sleep(-wait)  # paused, or a probe is out: ask again
        if wait > 0:
            await asyncio.sleep(wait)
        return Permit(key, tokens)

    async def settle(self, permit: Permit, used_tokens: int) -> None:
        """Give back the unused part of the token reservation; open the gate after a probe."""
        await self._run(self._settle, permit.key, [permit.tokens - used_tokens, self.limits.tpm or 0])

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause the key for every worker for ``seconds``."""
        await self._run(self._cooldown, key, [seconds, PROBE_WINDOW_S, STATE_TTL_S])

    async def _run(self, script: Any, key: str, args: list[Any]) -> Any:
        try:
            return await script(keys=[self.prefix + key], args=args)
        except RedisError as exc:
            raise LimiterError(
                f"the shared rate limiter's Redis cannot be reached ({exc}); no call is made without it. "
                "Check BATCHER_REDIS_URL (default: the broker's URL) and that Redis is running"
            ) from None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
