"""Rate limiting before each call: the ``Limiter`` interface and its in-process implementation.

Requests per minute and tokens per minute are each a GCRA (generic cell rate algorithm): the
state is one number, the theoretical arrival time (TAT), so a check is O(1) whatever the limit
(2M TPM costs the same as 10 RPM). A call *reserves* its place: the limiter moves the TAT forward
and tells the caller how long to wait, so waiting callers are served in order without polling.
After the call, the token reservation is reconciled with the usage the API reported.

``burst`` is how many seconds of rate may go out back to back. It defaults to none: calls are
evenly spaced, because a bucket as large as a minute would let a fresh run fire a whole minute's
requests at once and trip a relay that counts in shorter windows (many count per second).

A cooldown (a 429's Retry-After) pauses every caller of that key, not just the line that got it.
The Redis implementation for many workers (next to the Celery tasks) keeps the same interface.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Limits:
    """The configured pace for one limiter key; ``None`` means unlimited."""

    rpm: float | None = None
    tpm: float | None = None
    burst: float = 0.0


@dataclass(frozen=True, slots=True)
class Permit:
    """A granted reservation: the key and the tokens reserved, to reconcile after the call."""

    key: str
    tokens: int


class Limiter(Protocol):
    """What the execution core needs from a rate limiter."""

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait until a call with this many tokens may go out, and reserve its place."""
        ...

    async def settle(self, permit: Permit, used_tokens: int) -> None:
        """Reconcile the reservation with the tokens the call really used."""
        ...

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause every call on this key for ``seconds`` (a 429's Retry-After)."""
        ...


def gcra_reserve(tat: float, now: float, *, units: float, rate: float, burst: float) -> tuple[float, float]:
    """Reserve ``units`` at ``rate`` per second; return (new TAT, seconds to wait before sending).

    ``burst`` seconds of rate may go out at once. A reservation larger than the burst is still
    granted (after its wait), so one huge line cannot block a job forever.
    """
    new_tat = max(tat, now) + units / rate
    wait = new_tat - now - max(burst, units / rate)
    return new_tat, max(0.0, wait)


def gcra_refund(tat: float, *, units: float, rate: float) -> float:
    """Move the TAT back by ``units`` (negative units move it forward): reconciling a reservation."""
    return tat - units / rate


@dataclass
class _KeyState:
    request_tat: float = 0.0
    token_tat: float = 0.0
    paused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InProcessLimiter:
    """RPM/TPM limits for the callers of one process (the embedded ``batcher run``)."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: str) -> _KeyState:
        return self._keys.setdefault(key, _KeyState())

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait out any cooldown, then reserve one request and ``tokens`` tokens."""
        state = self._state(key)
        await self._wait_cooldown(state)
        async with state.lock:
            wait = self._reserve(state, tokens)
        if wait > 0:
            await asyncio.sleep(wait)
            await self._wait_cooldown(state)
        return Permit(key, tokens)

    def _reserve(self, state: _KeyState, tokens: int) -> float:
        now, wait = self._clock(), 0.0
        if self.limits.rpm:
            state.request_tat, w = gcra_reserve(
                state.request_tat, now, units=1, rate=self.limits.rpm / 60, burst=self.limits.burst
            )
            wait = max(wait, w)
        if self.limits.tpm and tokens > 0:
            state.token_tat, w = gcra_reserve(
                state.token_tat, now, units=tokens, rate=self.limits.tpm / 60, burst=self.limits.burst
            )
            wait = max(wait, w)
        return wait

    async def _wait_cooldown(self, state: _KeyState) -> None:
        while (delay := state.paused_until - self._clock()) > 0:
            await asyncio.sleep(delay)

    async def settle(self, permit: Permit, used_tokens: int) -> None:
        """Give back (or take more of) the token reservation once the real usage is known."""
        if self.limits.tpm and permit.tokens != used_tokens:
            state = self._state(permit.key)
            state.token_tat = gcra_refund(
                state.token_tat, units=permit.tokens - used_tokens, rate=self.limits.tpm / 60
            )

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause all calls on the key until ``seconds`` from now (never shortens a longer pause)."""
        state = self._state(key)
        state.paused_until = max(state.paused_until, self._clock() + seconds)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_HEADER_PAUSE_S = 60.0


def parse_reset(value: str) -> float | None:
    """A reset time as OpenAI writes it (``1s``, ``6m0s``, ``20ms``) or plain seconds."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def header_pause(headers: Mapping[str, str]) -> float | None:
    """How long ``x-ratelimit-*`` headers ask us to wait: only when a budget is exhausted.

    Relays copy these headers from whichever upstream key served the call, so they may only
    lower our pace (pause until the reset when ``remaining`` is 0), never raise it above the
    configured limits. Pauses are capped at a minute: an upstream key's hourly budget is not ours.
    """
    pauses = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if remaining is not None and remaining.strip() == "0" and reset:
            seconds = parse_reset(reset)
            if seconds:
                pauses.append(min(seconds, MAX_HEADER_PAUSE_S))
    return max(pauses) if pauses else None
