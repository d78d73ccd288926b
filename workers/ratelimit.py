"""Rate limiting before each call: the ``Limiter`` interface and its in-process implementation.

The request pace is found from the relay's answers (``workers.aimd``: unpaced until a 429, then
additive increase / multiplicative decrease), started from a pace learned by an earlier job and
never above ``--rpm`` (less a small headroom).

Requests per minute and tokens per minute are each a GCRA (generic cell rate algorithm): the
state is one number, the theoretical arrival time (TAT), so a check is O(1) whatever the limit
(2M TPM costs the same as 10 RPM). A call *reserves* its place: the limiter moves the TAT forward
and tells the caller how long to wait, so waiting callers are served in order without polling.
After the call, the token reservation is reconciled with the usage the API reported.

``burst`` is how many seconds of rate may go out back to back. It defaults to none: calls are
evenly spaced, because a bucket as large as a minute would let a fresh run fire a whole minute's
requests at once and trip a relay that counts in shorter windows (many count per second).

A caller whose wait for its place is cancelled (the job paused, cancelled or out of budget) gives
the place back: its tokens, and its request place. A place is one interval of the request TAT;
giving back the last one moves the TAT back to its start, and one in the middle is kept as a hole
until the places after it are given back too (moving the TAT back past places still held would
let the next caller share a moment with one of them: two calls where the pace allows one).

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

from workers.aimd import AimdTuning, RateState, ceiling_of, on_limited, on_success, on_wait


@dataclass(frozen=True)
class Limits:
    """The configured pace for every limiter key; ``None`` means unlimited (the pace is then found).

    ``learned``: key → the request pace an earlier job found for it, where this one starts.
    """

    rpm: float | None = None
    tpm: float | None = None
    burst: float = 0.0
    learned: Mapping[str, float] = field(default_factory=dict)
    tuning: AimdTuning = field(default_factory=AimdTuning)

    @property
    def ceiling(self) -> float | None:
        """The highest request pace, requests/s (``--rpm`` less the headroom)."""
        return ceiling_of(self.rpm)

    def start_rps(self, key: str) -> float | None:
        """Where the key's pace starts: learned (under the ceiling), else the ceiling, else unpaced."""
        learned, ceiling = self.learned.get(key), self.ceiling
        if learned and ceiling:
            return min(learned, ceiling)
        return learned or ceiling


@dataclass(frozen=True, slots=True)
class Permit:
    """A granted reservation: the key and the tokens reserved, to reconcile after the call."""

    key: str
    tokens: int


@dataclass(frozen=True)
class PaceView:
    """One key's pace as the limiter holds it: what ``status`` and the progress line show."""

    rate: float | None  # requests/s in force; None: unpaced (no limit met yet)
    ceiling: float | None  # from --rpm
    learned: bool  # the pace came from the relay's answers, not from --rpm
    cooldown_s: float  # left of a pause the relay asked for
    decreases: int  # times a rate-limit answer lowered the pace


class Limiter(Protocol):
    """What the execution core needs from a rate limiter."""

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait until a call with this many tokens may go out, and reserve its place."""
        ...

    def granted_now(self, key: str, tokens: int) -> Permit | None:
        """The permit at once if the call may go now without waiting, else None (then ``acquire``)."""
        ...

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        """Reconcile the reservation with the tokens the call really used; ``ok`` may raise the pace."""
        ...

    async def limited(self, key: str, pause: float | None) -> None:
        """A rate-limit answer: lower the pace, and pause every call on the key if the relay named a wait."""
        ...

    async def pace(self, key: str) -> PaceView:
        """The key's pace now."""
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


@dataclass(frozen=True, slots=True)
class Place:
    """One reserved request interval of the TAT, ``start`` (the send time) to ``end``."""

    start: float
    end: float


def give_back_place(tat: float, place: Place, holes: dict[float, float]) -> float:
    """The request TAT once ``place`` is given back; ``holes`` (end → start) holds the places given
    back before the TAT can move back over them."""
    if place.end != tat:
        holes[place.end] = place.start
        return tat
    tat = place.start
    while tat in holes:
        tat = holes.pop(tat)
    return tat


@dataclass
class _KeyState:
    aimd: RateState
    request_tat: float = 0.0
    token_tat: float = 0.0
    paused_until: float = 0.0
    epoch: int = 0  # bumped by a pause: reservations made before it are void
    holes: dict[float, float] = field(default_factory=dict)  # places given back: see give_back_place
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InProcessLimiter:
    """RPM/TPM limits and the found pace for the callers of one process (``batcher run``)."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            aimd = RateState(rate=self.limits.start_rps(key), ceiling=self.limits.ceiling)
            state = self._keys[key] = _KeyState(aimd)
        return state

    async def acquire(self, key: str, tokens: int) -> Permit:
        """Wait out any pause, then reserve one request and ``tokens`` tokens.

        A pause that starts while a caller waits for its place voids the place: the caller
        reserves again after the pause, so the calls after it are spaced, never a burst.
        """
        state = self._state(key)
        while True:
            await self._wait_cooldown(state)
            async with state.lock:
                epoch, (wait, place) = state.epoch, self._reserve(state, tokens)
            if wait <= 0:
                return Permit(key, tokens)
            on_wait(state.aimd, self._clock())
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                if state.epoch == epoch:  # a pause already voided the place
                    self._give_back(state, place, tokens)
                raise
            if state.epoch == epoch:
                return Permit(key, tokens)
            self._refund_tokens(state, tokens)

    def granted_now(self, key: str, tokens: int) -> Permit | None:
        """A permit without a wait (not paused, no caller inside, the pace lets it go); else None.

        The hot path of an unpaced run: ``acquire`` behind a stop-aware wait costs two tasks.
        """
        state = self._state(key)
        if state.lock.locked() or state.paused_until > self._clock():
            return None
        wait, place = self._reserve(state, tokens)
        if wait <= 0:
            return Permit(key, tokens)
        self._give_back(state, place, tokens)
        return None

    def _give_back(self, state: _KeyState, place: Place | None, tokens: int) -> None:
        self._refund_tokens(state, tokens)
        if place is not None:
            now = self._clock()
            state.holes = {end: start for end, start in state.holes.items() if end > now}
            state.request_tat = give_back_place(state.request_tat, place, state.holes)

    def _reserve(self, state: _KeyState, tokens: int) -> tuple[float, Place | None]:
        now, wait, place = self._clock(), 0.0, None
        rate = state.aimd.rate
        if rate:
            start = max(state.request_tat, now)
            state.request_tat, w = gcra_reserve(
                state.request_tat, now, units=1, rate=rate, burst=self.limits.burst
            )
            wait, place = max(wait, w), Place(start, state.request_tat)
        if self.limits.tpm and tokens > 0:
            state.token_tat, w = gcra_reserve(
                state.token_tat, now, units=tokens, rate=self.limits.tpm / 60, burst=self.limits.burst
            )
            wait = max(wait, w)
        return wait, place

    def _refund_tokens(self, state: _KeyState, tokens: int) -> None:
        if self.limits.tpm and tokens:
            state.token_tat = gcra_refund(state.token_tat, units=tokens, rate=self.limits.tpm / 60)

    async def _wait_cooldown(self, state: _KeyState) -> None:
        while (delay := state.paused_until - self._clock()) > 0:
            await asyncio.sleep(delay)

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        """Give back (or take more of) the token reservation; count a success for the pace."""
        state = self._state(permit.key)
        if self.limits.tpm and permit.tokens != used_tokens:
            self._refund_tokens(state, permit.tokens - used_tokens)
        if ok:
            on_success(state.aimd, self._clock(), window_full=window_full, tuning=self.limits.tuning)

    async def limited(self, key: str, pause: float | None) -> None:
        """Lower the pace (once per congestion event), and pause the key if a wait was named."""
        state = self._state(key)
        on_limited(state.aimd, self._clock(), tuning=self.limits.tuning)
        if pause:
            await self.cooldown(key, pause)

    async def cooldown(self, key: str, seconds: float) -> None:
        """Pause all calls on the key until ``seconds`` from now (never shortens a longer pause)."""
        state = self._state(key)
        until = self._clock() + seconds
        if until > state.paused_until:
            state.paused_until, state.epoch = until, state.epoch + 1
            state.request_tat = until  # places reserved before the pause are void (see acquire)
            state.holes.clear()

    async def pace(self, key: str) -> PaceView:
        """The key's pace now."""
        state, now = self._state(key), self._clock()
        aimd = state.aimd
        learned = aimd.rate is not None and (aimd.ceiling is None or aimd.rate < aimd.ceiling)
        return PaceView(aimd.rate, aimd.ceiling, learned, max(0.0, state.paused_until - now), aimd.decreases)


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
    """How long ``x-ratelimit-*`` headers of a *refused* call say the window stays full.

    Only a 429 without a Retry-After (which wins: the server named the wait) is paused by it.
    On a successful answer ``remaining: 0`` is the steady state of a client paced at the limit,
    so there it only holds the pace (``window_full``). Relays copy these headers from whichever
    upstream key served the call, so they never raise the pace; pauses are capped at a minute
    (an upstream key's hourly budget is not ours).
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


def window_full(headers: Mapping[str, str]) -> bool:
    """Whether an answer's ``x-ratelimit-remaining-requests`` says no request is left in the window."""
    remaining = headers.get("x-ratelimit-remaining-requests")
    return remaining is not None and remaining.strip() == "0"
