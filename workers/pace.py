"""The pace of a run as one typed snapshot: what the progress line, ``status`` and ``--json`` show.

``PaceCounters`` lives in the executor and counts as calls end (successes with their tokens, 429s,
overloads, pauses); ``PaceSnapshot`` is a frozen picture of it with the limiter's view of each
key and the concurrency, taken whenever a display asks. Rates are over the last ``RATE_WINDOW_S``
seconds, so they describe now, not the average since the start.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from workers.ratelimit import PaceView

RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class PaceSnapshot:
    """The pace at one moment."""

    requests_per_s: float
    tokens_per_s: float
    limit_rps: float | None  # the request pace in force (summed over keys); None: unpaced
    limit_source: str  # "configured" (--rpm), "learned" (from the relay's answers) or "none"
    in_flight: int
    concurrency: int | None  # the adaptive limit of calls in flight (None: not known here)
    ceiling: int  # --concurrency
    rate_limited: int  # calls answered 429 so far
    overloaded: int  # calls answered with an overload (503 upstream_overloaded, ...)
    cooldowns: int  # pauses a relay asked for (status: times the shared pace was lowered)
    cooldown_s: float  # left of the longest current pause

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "requests_per_s": round(self.requests_per_s, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "limit_rps": round(self.limit_rps, 2) if self.limit_rps is not None else None,
            "limit_source": self.limit_source,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "ceiling": self.ceiling,
            "rate_limited": self.rate_limited,
            "overloaded": self.overloaded,
            "cooldowns": self.cooldowns,
            "cooldown_s": round(self.cooldown_s, 2),
        }

    def describe(self) -> str:
        """One line: ``12.0 req/s · 3400 tok/s · limit 98.0/s learned · in flight 5/16 of 256 · 429s 3``."""
        limit = f"{self.limit_rps:.1f}/s {self.limit_source}" if self.limit_rps is not None else "unpaced"
        flight = (
            f"{self.in_flight}/{self.concurrency}" if self.concurrency is not None else str(self.in_flight)
        )
        text = (
            f"{self.requests_per_s:.1f} req/s · {self.tokens_per_s:.0f} tok/s · limit {limit} · "
            f"in flight {flight} of {self.ceiling} · 429s {self.rate_limited}"
        )
        if self.overloaded:
            text += f" · overloaded {self.overloaded}"
        if self.cooldowns:
            text += f" · cooldowns {self.cooldowns}"
        if self.cooldown_s > 0:
            text += f" · paused {self.cooldown_s:.1f}s"
        return text


def limit_in_force(views: dict[str, PaceView]) -> tuple[float | None, str]:
    """The request pace over every key, and where it came from."""
    rates = [v.rate for v in views.values() if v.rate is not None]
    if not rates:
        return None, "none"
    learned = any(v.learned for v in views.values())
    return sum(rates), "learned" if learned else "configured"


@dataclass
class PaceCounters:
    """Counters the executor bumps; one-second buckets of successes and tokens for the rates."""

    rate_limited: int = 0
    overloaded: int = 0
    cooldowns: int = 0
    _buckets: deque[list[float]] = field(default_factory=deque)  # [second, calls, tokens]

    def count(self, calls: int, tokens: int, *, now: float) -> None:
        """Successful calls, with the tokens they used."""
        second = float(int(now))
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0.0, 0.0])
            while self._buckets[0][0] < second - RATE_WINDOW_S:
                self._buckets.popleft()
        self._buckets[-1][1] += calls
        self._buckets[-1][2] += tokens

    def rates(self, now: float) -> tuple[float, float]:
        """(successful calls/s, tokens/s) over the last ``RATE_WINDOW_S`` seconds."""
        recent = [b for b in self._buckets if b[0] >= now - RATE_WINDOW_S]
        if not recent:
            return 0.0, 0.0
        span = max(1.0, now - recent[0][0])
        return sum(b[1] for b in recent) / span, sum(b[2] for b in recent) / span

    def snapshot(
        self, *, now: float, in_flight: int, concurrency: int, ceiling: int, views: dict[str, PaceView]
    ) -> PaceSnapshot:
        """The counters with the limiter's views and the concurrency, frozen."""
        requests, tokens = self.rates(now)
        limit, source = limit_in_force(views)
        return PaceSnapshot(
            requests_per_s=requests,
            tokens_per_s=tokens,
            limit_rps=limit,
            limit_source=source,
            in_flight=in_flight,
            concurrency=concurrency,
            ceiling=ceiling,
            rate_limited=self.rate_limited,
            overloaded=self.overloaded,
            cooldowns=self.cooldowns,
            cooldown_s=max((v.cooldown_s for v in views.values()), default=0.0),
        )
