"""How many calls may be in flight: a limit found from latency and overload answers, under a ceiling.

In the manner of Netflix's concurrency-limits (AIMD with a latency gradient, as Gradient2 and
Vegas do) and Envoy's adaptive concurrency filter, one per executor:

- **Slow start**: from ``start`` the limit grows by one per successful call (it doubles per
  round trip) until the first sign of trouble.
- **Latency**: the baseline is the lowest round trip seen, drifting up slowly so a relay that
  really got slower is not punished forever; when the recent round trip (an EWMA over about 50
  calls, so one stalled event loop is not a queue) passes ``tolerance`` × baseline the queue is
  building somewhere: the limit shrinks by ``decrease``, at most once per ``latency_hold``
  round trips.
- **Overload**: refused or reset connections and timeouts shrink it by ``decrease``. An overload
  answer (new-api's 503 ``upstream_overloaded``, any 5xx overload answer) is aimed instead: the
  relay refused a call with that many of ours out (it answers at once, so those out as the answer
  came back), and its count of ours can only be lower than ours, so the limit goes to one under
  that count: at least one place less than it was, at most ``decrease`` below it (one odd count
  must not crash it), except in slow start, where the count is the cut if it is deeper (the limit
  ran past the cap for a round trip). A fixed fraction took a limit of 21 in use to 19 where the
  relay capped 20; aimed, it goes to 20. One overload sends back a batch of such answers: a cut
  answers for the calls already out when it was made, so only the refusal of a call sent after
  the last cut cuts again (as TCP's recovery does; refusals come back at once, so a slow start
  that ran far past the cap comes down within milliseconds, not one step a round trip while the
  places above the cap keep drawing refusals). Signals that do not say when their call left
  (timeouts, latency) cut at most once per round trip.
- **Additive increase** after that, only while the limit is in use (at least half of it in
  flight: an idle limit proves nothing): ``gain`` per round trip after an overload (a hard cap
  is near: the probe above it is slow), ``latency_gain`` after a latency back-off.

``--concurrency`` is the ceiling; the limit never goes past it nor below ``floor``.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

DEFAULT_CEILING = 256


@dataclass(frozen=True)
class ConcurrencyTuning:
    """The controller's constants (defaults pinned by the tests and the benchmark)."""

    start: int = 16
    floor: int = 1
    tolerance: float = 2.0
    decrease: float = 0.9
    gain: float = 0.1  # calls added per round trip after an overload
    latency_gain: float = 1.0  # calls added per round trip after a latency back-off only
    short_weight: float = 0.02  # EWMA weight of the recent round trip (about 50 calls)
    latency_hold: float = 5.0  # round trips between two latency back-offs
    baseline_drift: float = 0.001  # how fast the baseline follows slower round trips


@dataclass
class ConcurrencyState:
    """The limit (fractional; the gate admits its integer part) and what it was found from."""

    ceiling: int
    tuning: ConcurrencyTuning = field(default_factory=ConcurrencyTuning)
    limit: float = 0.0
    slow_start: bool = True
    baseline: float | None = None
    recent: float | None = None
    last_decrease: float = float("-inf")
    decreases: int = 0
    overloaded: bool = False  # the last back-off was an overload: probe upwards slowly

    def __post_init__(self) -> None:
        if not self.limit:
            self.limit = float(min(self.ceiling, self.tuning.start))

    @property
    def admitted(self) -> int:
        """Calls the gate lets in at once."""
        return max(self.tuning.floor, min(self.ceiling, int(self.limit)))


def on_sample(state: ConcurrencyState, rtt: float, *, in_flight: int, now: float) -> None:
    """A call succeeded after ``rtt`` seconds with ``in_flight`` calls out: adjust the limit."""
    t = state.tuning
    if state.baseline is None or rtt < state.baseline:
        state.baseline = rtt
    else:
        state.baseline += (rtt - state.baseline) * t.baseline_drift
    state.recent = rtt if state.recent is None else state.recent + (rtt - state.recent) * t.short_weight
    if state.recent > t.tolerance * state.baseline:
        if now - state.last_decrease >= t.latency_hold * state.recent:
            _decrease(state, now, overload=False)
        return
    if in_flight < state.limit / 2:
        return
    gain = t.gain if state.overloaded else t.latency_gain
    step = 1.0 if state.slow_start else gain / state.limit
    state.limit = min(float(state.ceiling), state.limit + step)


def on_overload(
    state: ConcurrencyState, now: float, *, in_flight: int | None = None, sent_at: float | None = None
) -> None:
    """A refused or reset connection or a timeout; with ``in_flight`` (this call among them), an
    overload answer that came back with that many calls out: the limit is aimed under it.
    ``sent_at`` is when the call left (the clock of ``now``): a call sent before the last cut is
    one it already answered for."""
    _decrease(state, now, overload=True, refused_at=in_flight, sent_at=sent_at)


def _decrease(
    state: ConcurrencyState,
    now: float,
    *,
    overload: bool,
    refused_at: int | None = None,
    sent_at: float | None = None,
) -> None:
    if sent_at is not None:
        if sent_at <= state.last_decrease:
            return
    elif now - state.last_decrease < (state.recent or 0.0):
        return
    cut = state.limit * state.tuning.decrease
    if refused_at is not None:
        under = float(refused_at - 1)
        cut = min(cut, under) if state.slow_start else min(state.limit - 1, max(cut, under))
    state.slow_start, state.overloaded = False, overload
    state.limit = max(float(state.tuning.floor), cut)
    state.last_decrease, state.decreases = now, state.decreases + 1


class AdaptiveGate:
    """An asyncio semaphore whose size is ``state.admitted``, read at each acquire and release."""

    def __init__(self, state: ConcurrencyState) -> None:
        self.state = state
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> bool:
        """Somebody waits for a place: the next one given back is handed on at once."""
        return bool(self._waiters)

    def try_enter(self) -> bool:
        """Take a place at once if one is free and nobody waits for one (no task, no yield)."""
        if self.held < self.state.admitted and not self._waiters:
            self.held += 1
            return True
        return False

    async def __aenter__(self) -> None:
        if self.try_enter():
            return
        waiter = self.queue()
        try:
            await waiter
        except asyncio.CancelledError:
            self.leave(waiter)
            raise

    def queue(self) -> asyncio.Future[None]:
        """A place in line: the future is done once a place is handed to it (``leave`` if not used).

        A woken waiter is handed its place (``wake`` counts it): a caller arriving between the
        wake-up and the waiter's turn cannot take it, so nobody waits behind later arrivals.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def leave(self, waiter: asyncio.Future[None]) -> None:
        """Give up a wait: out of the line, or, if a place was handed to it already, pass that on."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        elif waiter.done() and not waiter.cancelled():
            self.held -= 1  # handed a place it will not use
            self.wake()

    async def __aexit__(self, *exc: object) -> None:
        self.held -= 1
        self.wake()

    def wake(self) -> None:
        """Hand places to as many waiters as the limit now allows (call after the limit grew)."""
        room = self.state.admitted - self.held
        while room > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)
                room -= 1
