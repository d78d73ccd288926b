"""Finding a relay's request rate from its answers: additive increase, multiplicative decrease.

A pure state machine over the times it is given, one per limiter key; the in-process limiter
holds one, and the Redis limiter runs the same rules in Lua (``workers.redis_limiter``) so every
worker shares one pace. The rules:

- **Unpaced until told.** With no ``--rpm`` and nothing learned, calls are not paced at all (many
  relays have no limit; the concurrency limit bounds them). The first rate-limit answer sets the
  pace from the *goodput*, the successes per second just before it: that is what the relay let
  through, so the pace lands near the real limit at once instead of halving down from a guess.
- **Only 429s that grow with the rate** lower it: a relay's limit refuses a share of the calls
  that grows as the pace passes it (nearly all of them when unpaced calls overshoot), while
  429s that come at random (a gateway's upstream key, a mock's fault rate) are a steady small
  share at any pace. So a 429 lowers the pace only when at least ``noise_count`` of them, and
  ``noise_share`` of the calls, were refused in the recent calls (``Refusals``); below that it
  is noise, and the line just waits its Retry-After. The recent calls are a window sized in
  calls, not seconds: the last ``window_calls`` / 2 to ``window_calls`` of them, and at least
  the last second or two. Counted over a second or two, a limit of 10 req/s had 10–20 calls to
  judge by: the pace had to pass the limit by 10 % or more before two 429s fell in one such
  span, and 4–17 % of the calls were refused at 5–10 req/s. At 100 req/s and more a second
  holds enough calls: the same as before. 100–200 calls, not 50–100: with 1 % of the calls
  refused at random, a window of 50–100 at 30 calls a second saw two of them together often
  enough to lower the pace every 15 s, and a slow relay got 90 % of its own pace (97 % now).
  A decrease clears the window: its 429s were that congestion event's, and the next decrease
  needs 429s of its own.
- **Multiplicative decrease**, at most once per ``hold`` seconds (one congestion event sends back
  many 429s): to ``decrease`` × min(pace, goodput). Near the configured ceiling (``NEAR_CEILING``)
  a 429 is most often arrival jitter, so the step there is ``ceiling_decrease`` (small) × the pace:
  the goodput of a second in which this process stalled says nothing about the relay's limit.
- **Slow start** after the first congestion event of an unpaced key: the pace starts from that
  goodput (or ``unknown_start`` when nothing succeeded yet) and doubles per second until the next
  429. The goodput of a first burst misses the calls still in flight when the refusals came
  back (a third of them at 30 ms and 100 req/s), so starting the slow additive climb there left
  a 35 s job at 85 % of its limit; doubling finds the limit in about a second.
- **Additive increase** while calls succeed *and the pace is what holds them back* (a pace that
  is not binding proves nothing), spread over the successes, never above the ceiling (``--rpm``):
  at most ``increase`` × the pace per second, and slow enough that about ``cycle_calls`` calls go
  between two climbs past the limit (each costs a few 429s before the noise filter lets a
  decrease through: at 10 req/s a fixed 1 req/s per second was 10 % of the calls refused).
  A successful answer whose ``x-ratelimit-remaining-requests`` is 0 says the window is full: no
  increase on it.

The ceiling is ``--rpm`` minus ``HEADROOM``: a client spaced at exactly the limit still trips a
sliding window whenever arrival jitter puts one call too many in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADROOM = 0.02  # pace at 98 % of an explicit limit: see the module docstring
BINDING_S = 1.0  # the pace counts as binding if a caller had to wait within this long
NEAR_CEILING = 0.95  # within 5 % of --rpm a 429 is taken for jitter: the small step


@dataclass(frozen=True)
class AimdTuning:
    """The controller's constants (defaults pinned by the tests and the benchmark)."""

    decrease: float = 0.95
    ceiling_decrease: float = 0.98
    increase: float = 0.025  # of the pace, per second, at most
    cycle_calls: float = 200.0  # calls between two probes past the limit, at least (see above)
    min_increase: float = 0.001  # requests/s per second
    hold: float = 1.0  # seconds between two decreases
    floor: float = 0.2  # requests/s: the slowest pace
    unknown_start: float = 10.0  # requests/s after a 429 when nothing succeeded yet
    noise_share: float = 0.03  # refused share of the recent calls below which 429s are noise
    noise_count: int = 2  # ... and fewer 429s than this in them
    window_calls: int = 200  # the recent calls: from half this many (and a second) to this many


def ceiling_of(rpm: float | None) -> float | None:
    """The highest pace (requests/s) for an explicit ``--rpm``."""
    return rpm / 60 * (1 - HEADROOM) if rpm else None


@dataclass
class Goodput:
    """Successes per second, from one-second buckets."""

    start: float = 0.0
    count: int = 0
    last_rate: float = 0.0

    def tick(self, now: float) -> None:
        """Count one success."""
        self._roll(now)
        self.count += 1

    def _roll(self, now: float) -> None:
        elapsed = now - self.start
        if elapsed >= 1.0:
            self.last_rate = self.count / elapsed if elapsed < 2.0 else 0.0
            self.start, self.count = now, 0

    def rate(self, now: float) -> float:
        """The successes of about the last second: this second's so far, plus the part of the
        last second's rate that falls within one second of ``now`` (a sliding estimate), or the
        last full second's rate if that is higher.

        This second's count is not extrapolated: a fresh window lets a burst through in a tenth
        of a second, and ten times that burst is not the relay's rate. Without the sliding part,
        a pace that doubled within a second was lowered from the second before it, half its rate.
        """
        self._roll(now)
        sliding = self.count + self.last_rate * max(0.0, 1.0 - (now - self.start))
        return max(self.last_rate, sliding)


MAX_BUCKET_S = 30.0  # a bucket of recent calls closes after this long; this long idle forgets them


@dataclass
class Refusals:
    """The recent calls and the 429s among them: a window sized in calls (see the module docstring).

    Two buckets, the current one and the last closed one. A bucket starts with its first call and
    closes once it holds ``window_calls`` / 2 calls and has lasted a second (or after
    ``MAX_BUCKET_S``). A key idle that long forgets both: its old 429s are not its pace now.
    """

    start: float = 0.0
    at: float = float("-inf")  # the last call counted
    calls: int = 0
    refused: int = 0
    last_calls: int = 0
    last_refused: int = 0

    def count(self, now: float, *, refused: bool, tuning: AimdTuning) -> None:
        """Count one answered call, refused (429) or not."""
        if now - self.at >= MAX_BUCKET_S:
            self.clear(now)
        if not self.calls:
            self.start = now
        elapsed = now - self.start
        if elapsed >= MAX_BUCKET_S or (elapsed >= 1.0 and self.calls * 2 >= tuning.window_calls):
            self.last_calls, self.last_refused = self.calls, self.refused
            self.start, self.calls, self.refused = now, 0, 0
        self.at, self.calls, self.refused = now, self.calls + 1, self.refused + refused

    def grows_with_rate(self, tuning: AimdTuning) -> bool:
        """Whether the recent 429s are enough, and a large enough share of the calls, to be the limit's."""
        refused, calls = self.refused + self.last_refused, self.calls + self.last_calls
        return refused >= tuning.noise_count and refused >= tuning.noise_share * calls

    def clear(self, now: float) -> None:
        """Forget the recent calls: a decrease acted on their 429s (or the key was idle)."""
        self.start, self.calls, self.refused, self.last_calls, self.last_refused = now, 0, 0, 0, 0


@dataclass
class RateState:
    """One key's pace: ``rate`` in requests/s (None: unpaced), its ceiling and its history."""

    rate: float | None = None
    ceiling: float | None = None
    last_decrease: float = float("-inf")
    bound_at: float = float("-inf")
    decreases: int = 0
    probing: bool = False  # a pace guessed without evidence: doubles per second until a 429
    goodput: Goodput = field(default_factory=Goodput)
    refusals: Refusals = field(default_factory=Refusals)

    def __post_init__(self) -> None:
        if self.ceiling is not None:
            self.rate = self.ceiling if self.rate is None else min(self.rate, self.ceiling)


def on_wait(state: RateState, now: float) -> None:
    """A caller had to wait for the pace: it is binding."""
    state.bound_at = now


def on_success(
    state: RateState, now: float, *, window_full: bool = False, tuning: AimdTuning = AimdTuning()
) -> None:
    """A call succeeded: count it; raise the pace if it is what holds the calls back."""
    state.goodput.tick(now)
    state.refusals.count(now, refused=False, tuning=tuning)
    if state.rate is None or window_full or now - state.bound_at > BINDING_S:
        return
    if state.probing:
        state.rate += 1.0  # one per success: doubles per second
    else:
        state.rate += increase_per_second(state.rate, tuning) / state.rate
    if state.ceiling is not None:
        state.rate = min(state.rate, state.ceiling)


def increase_per_second(rate: float, tuning: AimdTuning) -> float:
    """How fast a pace that binds climbs back to where the last decrease took it from."""
    cycle = (1 - tuning.decrease) * rate * rate / tuning.cycle_calls
    return max(tuning.min_increase, min(tuning.increase * rate, cycle))


def on_limited(state: RateState, now: float, *, tuning: AimdTuning = AimdTuning()) -> bool:
    """A rate-limit answer: lower the pace once per congestion event. True when it was lowered."""
    state.refusals.count(now, refused=True, tuning=tuning)
    if now - state.last_decrease < tuning.hold:
        return False
    if not state.refusals.grows_with_rate(tuning):
        return False  # rate-independent 429s: see the module docstring
    good = state.goodput.rate(now)
    at_ceiling = (
        state.ceiling is not None and state.rate is not None and state.rate >= state.ceiling * NEAR_CEILING
    )
    factor = tuning.ceiling_decrease if at_ceiling else tuning.decrease
    if state.rate is None:
        base = good if good > 0 else tuning.unknown_start / factor
    elif at_ceiling:
        base = state.rate  # jitter at a known limit: a stalled second's goodput is not the relay's rate
    else:
        base = min(state.rate, good) if good > 0 else state.rate
    state.probing = good <= 0 or state.rate is None
    state.rate = max(tuning.floor, factor * base)
    state.last_decrease, state.decreases = now, state.decreases + 1
    state.refusals.clear(now)
    return True
