"""The shared rate limiter: one RPM/TPM pace for every worker on every machine, kept in Redis.

The same GCRA as the in-process limiter (``workers.ratelimit``), run as Lua scripts so that each
reservation is atomic, and timed by Redis's own clock (``TIME``) so that workers whose clocks
disagree still share one timeline. The state of a key is one small hash (request TAT, token TAT,
cooldown end, probe gate): O(1) per call at any limit, where a moving-window log would hold one
entry per token (2M entries a minute at 2M TPM).

The request pace is found as ``workers.aimd`` finds it (the same rules in Lua: unpaced until
429s that grow with the rate, then additive increase on successes while the pace binds, one
multiplicative decrease per congestion event, from the goodput every worker's successes add up
to; 429s that are a small steady share of the calls are noise), so every worker shares one
pace; it starts from a pace learned by an earlier job and never passes ``--rpm``. The scripts
are in ``workers.limiter_scripts``; a place whose wait is cancelled is given back as
``workers.ratelimit`` describes.

Cooldown: a 429's Retry-After pauses the key for every worker, and voids the places reserved
before it (an epoch in the hash; a caller that waited for its place checks it), so the calls
after a pause are spaced at the pace instead of going out together. When a pause of at least
``PROBE_AFTER_S`` ends, one call goes first as a probe while the others wait (a half-open gate,
at most ``PROBE_WINDOW_S``); if the probe is answered 429 again the pause starts over, so a storm
costs one call per Retry-After per key, not one per worker. Any other answer to the probe opens
the gate; a probe whose caller is cancelled before it is sent hands the gate on. A shorter pause
is a sliding window's edge (the wait until its oldest call leaves), not a storm: holding every
worker behind a probe's round trip there cost a known limit 5 % of it.

If Redis cannot be reached the limiter fails closed: it raises ``LimiterError`` and no call is
made without a reservation.

Why not a library: ``limits``' moving and sliding windows count requests but cannot reserve a
variable token amount and give back the unused part after the call, nor hold a shared cooldown;
the GCRA is twenty lines of Lua and keeps both limits in one round trip.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobs.errors import LimiterError
from workers import limiter_scripts as lua
from workers.ratelimit import Limits, PaceView, Permit

KEY_PREFIX = "batcher:rl:"
PROBE_WINDOW_S = 10.0
PROBE_AFTER_S = 1.0  # shorter pauses open no probe gate: see the module docstring
REVALIDATE_AFTER_S = 0.02  # a shorter wait cannot have let a pause's burst build up: no round trip
STATE_TTL_S = 3600


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

    def __init__(
        self,
        client: aioredis.Redis,
        limits: Limits,
        *,
        prefix: str = KEY_PREFIX,
        probe_after: float = PROBE_AFTER_S,
    ) -> None:
        self.client, self.limits, self.prefix = client, limits, prefix
        self.probe_after = probe_after
        self._acquire = client.register_script(lua.ACQUIRE)
        self._valid = client.register_script(lua.STILL_VALID)
        self._release = client.register_script(lua.RELEASE)
        self._settle = client.register_script(lua.SETTLE)
        self._limited = client.register_script(lua.LIMITED)
        self._pace = client.register_script(lua.PACE)

    @classmethod
    def from_url(cls, url: str, limits: Limits) -> RedisLimiter:
        """A limiter on the Redis at ``url`` (``BATCHER_REDIS_URL``)."""
        return cls(redis_client(url), limits)

    def acquire_args(self, key: str, tokens: int) -> list[Any]:
        """The acquire script's arguments for a call of ``tokens`` on ``key``."""
        lim = self.limits
        start = lim.start_rps(key) or 0
        return [tokens, lim.ceiling or 0, lim.tpm or 0, lim.burst, PROBE_WINDOW_S, STATE_TTL_S, start]

    def granted_now(self, key: str, tokens: int) -> Permit | None:
        """Never: every place is reserved in Redis (``acquire``)."""
        return None

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait until the shared pace lets a call with ``tokens`` go, and reserve its place.

        A pause that began while the caller waited for its place voids it: reserve again. A
        wait that is cancelled gives the place back (see ``workers.ratelimit``).
        """
        args = self.acquire_args(key, tokens)
        while True:
            reserved = await self._reserve(key, args, tokens)
            if reserved.wait < 0:
                await asyncio.sleep(-reserved.wait)  # paused, or a probe is out: ask again
                continue
            if reserved.wait == 0:
                return Permit(key, tokens)
            try:
                await asyncio.sleep(reserved.wait)
                if reserved.wait < REVALIDATE_AFTER_S or await self._still_valid(key, reserved):
                    return Permit(key, tokens)
            except asyncio.CancelledError:  # while it waited or while its place was checked
                await asyncio.shield(self._give_back(key, reserved, tokens))
                raise

    async def _still_valid(self, key: str, reserved: _Reserved) -> bool:
        """No pause began since the place was reserved (a pause voids the places before it)."""
        return bool(int(await self._run(self._valid, key, [reserved.epoch])))

    async def _reserve(self, key: str, args: list[Any], tokens: int) -> _Reserved:
        """The acquire script's answer. A caller cancelled while the script runs may have been
        granted a place in Redis already: that place is given back once the answer is in."""
        running = asyncio.ensure_future(self._run(self._acquire, key, args))
        try:
            return _Reserved.parse(await asyncio.shield(running))
        except asyncio.CancelledError:
            await asyncio.shield(self._give_back_reserved(running, key, tokens))
            raise

    async def _give_back_reserved(self, running: asyncio.Future[Any], key: str, tokens: int) -> None:
        try:
            reserved = _Reserved.parse(await running)
        except LimiterError:
            return  # no answer: nothing known to give back
        if reserved.wait >= 0:  # a place was reserved (a negative wait reserves none)
            await self._give_back(key, reserved, tokens)

    async def _give_back(self, key: str, reserved: _Reserved, tokens: int) -> None:
        args = [reserved.epoch, tokens, self.limits.tpm or 0, reserved.start, reserved.end]
        args.append(int(reserved.probe))
        await self._run(self._release, key, args)

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        """Give back the unused part of the token reservation; open the gate after a probe;
        count a success for the shared pace."""
        t = self.limits.tuning
        args = [permit.tokens - used_tokens, self.limits.tpm or 0, int(ok), int(window_full)]
        args += [self.limits.ceiling or 0, t.increase, t.min_increase, STATE_TTL_S, t.cycle_calls, t.decrease]
        args += [t.window_calls]
        await self._run(self._settle, permit.key, args)

    async def limited(self, key: str, pause: float | None) -> None:
        """Lower the shared pace (once per congestion event) and pause the key for every worker."""
        t = self.limits.tuning
        args = [pause or 0, PROBE_WINDOW_S, STATE_TTL_S, self.limits.ceiling or 0]
        args += [t.decrease, t.ceiling_decrease, t.hold, t.floor, t.unknown_start, 1, self.probe_after]
        args += [t.noise_share, t.noise_count, t.window_calls]
        await self._run(self._limited, key, args)

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause the key for every worker for ``seconds``, without lowering the pace."""
        t = self.limits.tuning
        args = [seconds, PROBE_WINDOW_S, STATE_TTL_S, self.limits.ceiling or 0]
        args += [t.decrease, t.ceiling_decrease, t.hold, t.floor, t.unknown_start, 0, self.probe_after]
        args += [t.noise_share, t.noise_count, t.window_calls]
        await self._run(self._limited, key, args)

    async def pace(self, key: str) -> PaceView:
        """The shared pace of the key now."""
        rate, paused, decreases = await self._run(self._pace, key, [])
        value = float(rate) if rate else None
        ceiling = self.limits.ceiling
        learned = value is not None and (ceiling is None or value < ceiling * 0.999)
        return PaceView(value, ceiling, learned, float(paused), int(decreases))

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


@dataclass(frozen=True)
class _Reserved:
    """The acquire script's answer: the wait, the pause epoch, the request place ('' when none),
    and whether this call is the probe after a pause."""

    wait: float
    epoch: int
    start: str
    end: str
    probe: bool = False

    @classmethod
    def parse(cls, answer: Any) -> _Reserved:
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        wait, epoch, start, end, probe = text.split("|")
        return cls(float(wait), int(epoch), start, end, probe == "1")
