"""The shared rate limiter: one RPM/TPM pace for every worker on every machine, kept in Redis.

The same GCRA as the in-process limiter (``workers.ratelimit``), run as a Lua script so that each
reservation is atomic, and timed by Redis's own clock (``TIME``) so that workers whose clocks
disagree still share one timeline. The state of a key is one small hash (request TAT, token TAT,
cooldown end, probe gate): O(1) per call at any limit, where a moving-window log would hold one
entry per token (2M entries a minute at 2M TPM).

The request pace is found as ``workers.aimd`` finds it (the same rules in Lua: unpaced until a
429, then additive increase on successes while the pace binds, one multiplicative decrease per
congestion event, from the goodput every worker's successes add up to), so every worker shares
one pace; it starts from a pace learned by an earlier job and never passes ``--rpm``.

Cooldown: a 429's Retry-After pauses the key for every worker, and voids the places reserved
before it (an epoch in the hash; a caller that waited for its place checks it), so the calls
after a pause are spaced at the pace instead of going out together. When a pause of at least
``PROBE_AFTER_S`` ends, one call goes first as a probe while the others wait (a half-open gate,
at most ``PROBE_WINDOW_S``); if the probe is answered 429 again the pause starts over, so a storm
costs one call per Retry-After per key, not one per worker. Any other answer to the probe opens
the gate. A shorter pause is a sliding window's edge (the wait until its oldest call leaves), not
a storm: holding every worker behind a probe's round trip there cost a known limit 5 % of it.

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
from workers.aimd import NEAR_CEILING
from workers.ratelimit import Limits, PaceView, Permit

KEY_PREFIX = "batcher:rl:"
PROBE_WINDOW_S = 10.0
PROBE_AFTER_S = 1.0  # shorter pauses open no probe gate: see the module docstring
REVALIDATE_AFTER_S = 0.02  # a shorter wait cannot have let a pause's burst build up: no round trip
STATE_TTL_S = 3600

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] = state hash; ARGV = tokens, ceiling (req/s, 0: none), tpm, burst, probe window, ttl,
# start pace (req/s, 0: unpaced). Returns "wait|epoch|start|end": the seconds to wait, the pause
# epoch the place was reserved in, and the request TAT interval it took ('' when unpaced). A
# negative wait means "not yet: ask again after -wait seconds".
_ACQUIRE = (
    _NOW
    + """
local tokens, ceiling, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local burst, probe_window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local start = tonumber(ARGV[7])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'p', 'g', 'probe', 'rate', 'ep')
local rtat, ttat = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local paused, gate, probe = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
local rate, epoch = tonumber(s[6]), tonumber(s[7]) or 0
if now < paused then
  return string.format('%.6f|%d', -(paused - now), epoch)
end
if now < gate then
  if probe == 1 then
    return string.format('%.6f|%d', -math.min(gate - now, 0.25), epoch)
  end
  redis.call('HSET', KEYS[1], 'probe', 1)
end
if not rate and start > 0 then
  rate = start
end
if rate and ceiling > 0 and rate > ceiling then
  rate = ceiling
end
if rate then
  redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', rate))
end
local wait, from, to = 0, '', ''
if rate then
  local new = math.max(rtat, now) + 1 / rate
  wait = math.max(wait, new - now - math.max(burst, 1 / rate))
  from, to = string.format('%.6f', math.max(rtat, now)), string.format('%.6f', new)
  redis.call('HSET', KEYS[1], 'r', to)
end
if tpm > 0 and tokens > 0 then
  local trate = tpm / 60
  local new = math.max(ttat, now) + tokens / trate
  wait = math.max(wait, new - now - math.max(burst, tokens / trate))
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', new))
end
if wait > 0 then
  redis.call('HSET', KEYS[1], 'b', string.format('%.6f', now))
end
redis.call('EXPIRE', KEYS[1], ttl)
return string.format('%.6f|%d|%s|%s', math.max(wait, 0), epoch, from, to)
"""
)

# Drops the places given back (hash fields 'h:<end>' = start) that ended before ARGV[1].
_DROP_HOLES = """
local function drop_holes(before)
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 'h:' and tonumber(string.sub(f, 3)) <= before then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
"""

# ARGV = epoch, tokens, tpm, start, end (of the request place; '' when none). Gives a place back as
# workers.ratelimit.give_back_place does, unless a pause voided it (a newer epoch).
_RELEASE = (
    _NOW
    + _DROP_HOLES
    + """
if (tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0) ~= tonumber(ARGV[1]) then return 0 end
local tokens, tpm, from, to = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
if tpm > 0 and tokens > 0 then
  local ttat = tonumber(redis.call('HGET', KEYS[1], 't')) or now
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', ttat - tokens / (tpm / 60)))
end
if to == '' then return 1 end
drop_holes(now)
if redis.call('HGET', KEYS[1], 'r') ~= to then
  redis.call('HSET', KEYS[1], 'h:' .. to, from)
  return 1
end
local tat = from
local before = redis.call('HGET', KEYS[1], 'h:' .. tat)
while before do
  redis.call('HDEL', KEYS[1], 'h:' .. tat)
  tat = before
  before = redis.call('HGET', KEYS[1], 'h:' .. tat)
end
redis.call('HSET', KEYS[1], 'r', tat)
return 1
"""
)

# ARGV = epoch. 1 when no pause began since the place was reserved in that epoch.
_STILL_VALID = """
local epoch = tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0
return epoch == tonumber(ARGV[1]) and 1 or 0
"""

# The goodput buckets, as workers.aimd.Goodput: rolls them and leaves the rate in `good`.
_GOODPUT = """
local gs = tonumber(redis.call('HGET', KEYS[1], 'gs')) or now
local gc = tonumber(redis.call('HGET', KEYS[1], 'gc')) or 0
local gl = tonumber(redis.call('HGET', KEYS[1], 'gl')) or 0
if now - gs >= 1 then
  if now - gs < 2 then gl = gc / (now - gs) else gl = 0 end
  gs, gc = now, 0
end
"""

# ARGV = tokens to give back (negative: take more), tpm, ok, window full, ceiling, increase,
# min increase, ttl. A success raises the pace as workers.aimd.on_success does.
_SETTLE = (
    _NOW
    + _GOODPUT
    + """
local refund, tpm, ok, full = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4] == '1'
local ceiling, inc, min_inc = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if tpm > 0 and refund ~= 0 then
  local ttat = tonumber(redis.call('HGET', KEYS[1], 't')) or now
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', ttat - refund / (tpm / 60)))
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
if now >= paused then
  redis.call('HDEL', KEYS[1], 'g', 'probe')
end
if ok then
  gc = gc + 1
  redis.call('HSET', KEYS[1], 'gs', string.format('%.6f', gs), 'gc', gc, 'gl', string.format('%.6f', gl))
  local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
  local bound = tonumber(redis.call('HGET', KEYS[1], 'b')) or 0
  if rate and not full and now - bound <= 1 then
    if redis.call('HGET', KEYS[1], 'pr') == '1' then
      rate = rate + 1
    else
      rate = rate + math.max(min_inc, inc * rate) / rate
    end
    if ceiling > 0 then rate = math.min(rate, ceiling) end
    redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', rate))
  end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[8]))
end
return 1
"""
)

# ARGV = pause (0: none), probe window, ttl, ceiling, decrease, ceiling decrease, hold, floor,
# unknown start, lower (1: lower the pace as workers.aimd.on_limited does), the shortest pause
# that opens a probe gate. Then pauses the key.
_LIMITED = (
    _NOW
    + _GOODPUT
    + _DROP_HOLES
    + f"local NEAR = {NEAR_CEILING}\n"
    + """
local pause, probe_window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ceiling, dec, cdec = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local hold, floor, unknown = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local last = tonumber(redis.call('HGET', KEYS[1], 'ld'))
if ARGV[10] == '1' and (not last or now - last >= hold) then
  local good = math.max(gl, gc)
  local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
  local factor = dec
  local at_ceiling = ceiling > 0 and rate and rate >= ceiling * NEAR
  if at_ceiling then factor = cdec end
  local base
  if not rate then
    if good > 0 then base = good else base = unknown / factor end
  elseif at_ceiling then
    base = rate
  elseif good > 0 then
    base = math.min(rate, good)
  else
    base = rate
  end
  local probing = 0
  if good <= 0 then probing = 1 end
  redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', math.max(floor, factor * base)),
    'ld', string.format('%.6f', now), 'pr', probing)
  redis.call('HINCRBY', KEYS[1], 'nd', 1)
end
if pause > 0 then
  local untl = now + pause
  local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
  if untl > paused then
    redis.call('HSET', KEYS[1], 'p', string.format('%.6f', untl), 'r', string.format('%.6f', untl))
    if pause >= tonumber(ARGV[11]) then
      redis.call('HSET', KEYS[1], 'g', string.format('%.6f', untl + probe_window))
    end
    redis.call('HINCRBY', KEYS[1], 'ep', 1)
    drop_holes(math.huge)  -- the places before the pause are void
  end
  redis.call('HDEL', KEYS[1], 'probe')
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""
)

# Returns rate ('' when unpaced), seconds of pause left, decreases.
_PACE = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'p', 'nd')
local paused = tonumber(s[2]) or 0
return {s[1] or '', string.format('%.6f', math.max(0, paused - now)), tonumber(s[3]) or 0}
"""
)


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
        self._acquire = client.register_script(_ACQUIRE)
        self._valid = client.register_script(_STILL_VALID)
        self._release = client.register_script(_RELEASE)
        self._settle = client.register_script(_SETTLE)
        self._limited = client.register_script(_LIMITED)
        self._pace = client.register_script(_PACE)

    @classmethod
    def from_url(cls, url: str, limits: Limits) -> RedisLimiter:
        """A limiter on the Redis at ``url`` (``BATCHER_REDIS_URL``)."""
        return cls(redis_client(url), limits)

    def acquire_args(self, key: str, tokens: int) -> list[Any]:
        """The acquire script's arguments for a call of ``tokens`` on ``key``."""
        lim = self.limits
        start = lim.start_rps(key) or 0
        return [tokens, lim.ceiling or 0, lim.tpm or 0, lim.burst, PROBE_WINDOW_S, STATE_TTL_S, start]

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait until the shared pace lets a call with ``tokens`` go, and reserve its place.

        A pause that began while the caller waited for its place voids it: reserve again. A
        wait that is cancelled gives the place back (see ``workers.ratelimit``).
        """
        args = self.acquire_args(key, tokens)
        while True:
            reserved = _Reserved.parse(await self._run(self._acquire, key, args))
            if reserved.wait < 0:
                await asyncio.sleep(-reserved.wait)  # paused, or a probe is out: ask again
                continue
            if reserved.wait == 0:
                return Permit(key, tokens)
            try:
                await asyncio.sleep(reserved.wait)
            except asyncio.CancelledError:
                await asyncio.shield(self._give_back(key, reserved, tokens))
                raise
            if reserved.wait < REVALIDATE_AFTER_S or int(await self._run(self._valid, key, [reserved.epoch])):
                return Permit(key, tokens)

    async def _give_back(self, key: str, reserved: _Reserved, tokens: int) -> None:
        args = [reserved.epoch, tokens, self.limits.tpm or 0, reserved.start, reserved.end]
        await self._run(self._release, key, args)

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        """Give back the unused part of the token reservation; open the gate after a probe;
        count a success for the shared pace."""
        t = self.limits.tuning
        args = [permit.tokens - used_tokens, self.limits.tpm or 0, int(ok), int(window_full)]
        args += [self.limits.ceiling or 0, t.increase, t.min_increase, STATE_TTL_S]
        await self._run(self._settle, permit.key, args)

    async def limited(self, key: str, pause: float | None) -> None:
        """Lower the shared pace (once per congestion event) and pause the key for every worker."""
        t = self.limits.tuning
        args = [pause or 0, PROBE_WINDOW_S, STATE_TTL_S, self.limits.ceiling or 0]
        args += [t.decrease, t.ceiling_decrease, t.hold, t.floor, t.unknown_start, 1, self.probe_after]
        await self._run(self._limited, key, args)

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause the key for every worker for ``seconds``, without lowering the pace."""
        t = self.limits.tuning
        args = [seconds, PROBE_WINDOW_S, STATE_TTL_S, self.limits.ceiling or 0]
        args += [t.decrease, t.ceiling_decrease, t.hold, t.floor, t.unknown_start, 0, self.probe_after]
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
    """The acquire script's answer: the wait, the pause epoch, the request place ('' when none)."""

    wait: float
    epoch: int
    start: str
    end: str

    @classmethod
    def parse(cls, answer: Any) -> _Reserved:
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        wait, epoch, start, end = text.split("|")
        return cls(float(wait), int(epoch), start, end)
