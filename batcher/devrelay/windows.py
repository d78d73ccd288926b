"""The stand-in relay's counting algorithms: fixed window, sliding log and token bucket.

Each counts *units* (requests, or tokens) against ``limit`` per ``window`` seconds and answers,
for a call of ``units`` at time ``now``, either "admitted" (``None``) or how many seconds until it
would be admitted: the honest Retry-After a relay would send.

- **fixed**: counts per window aligned on the epoch (``int(now / window)``), as the old
  ``rps_limit`` did per wall-clock second. A client may send ``2 × limit`` across a boundary.
- **sliding**: a true sliding log (every admitted call's time and units, forgotten ``window``
  seconds later), not the two-window weighted estimate: the strictest reading of "at most
  ``limit`` in any ``window``", which is what a client pacing at exactly the limit trips first.
- **bucket**: a token bucket of ``limit`` capacity refilled at ``limit / window`` per second,
  full at the start (so it allows one window's burst, then the rate).

All are pure over the time they are given; the relay passes its clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class LimitMode(StrEnum):
    """How a limit counts."""

    FIXED = "fixed"
    SLIDING = "sliding"
    BUCKET = "bucket"


class Window(Protocol):
    """One limit's state."""

    def take(self, now: float, units: float) -> float | None:
        """Admit ``units`` now (``None``) or say how many seconds until they would fit."""
        ...

    def remaining(self, now: float) -> int:
        """Units that could go now."""
        ...

    def reset_in(self, now: float) -> float:
        """Seconds until the window is back to its full allowance."""
        ...

    def give_back(self, units: float) -> None:
        """Undo the last ``take`` of ``units`` (a call refused by another limit)."""
        ...

    def counted(self) -> float:
        """Units the window holds as of the last ``take``: for the relay's own busiest-window report."""
        ...


@dataclass
class FixedWindow:
    """``limit`` units per epoch-aligned window."""

    limit: float
    window: float
    _index: int = -1
    _used: float = 0.0

    def _roll(self, now: float) -> None:
        index = int(now // self.window)
        if index != self._index:
            self._index, self._used = index, 0.0

    def take(self, now: float, units: float) -> float | None:
        self._roll(now)
        if self._used + units > self.limit and self._used > 0:
            return (self._index + 1) * self.window - now
        self._used += units
        return None

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, int(self.limit - self._used))

    def reset_in(self, now: float) -> float:
        self._roll(now)
        return (self._index + 1) * self.window - now if self._used else 0.0

    def give_back(self, units: float) -> None:
        self._used = max(0.0, self._used - units)

    def counted(self) -> float:
        return self._used


@dataclass
class SlidingLog:
    """At most ``limit`` units in any ``window`` seconds, from the log of admitted calls."""

    limit: float
    window: float
    _log: deque[tuple[float, float]] = field(default_factory=deque)
    _used: float = 0.0

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self._used -= self._log.popleft()[1]

    def take(self, now: float, units: float) -> float | None:
        self._expire(now)
        if self._used + units > self.limit and self._log:
            return self._wait_for(now, units)
        self._log.append((now, units))
        self._used += units
        return None

    def _wait_for(self, now: float, units: float) -> float:
        """Seconds until enough of the oldest calls leave the window for ``units`` to fit."""
        freed, need = 0.0, self._used + units - self.limit
        for at, amount in self._log:
            freed += amount
            if freed >= need:
                return max(at + self.window - now, 0.001)
        return self.window

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(0, int(self.limit - self._used))

    def reset_in(self, now: float) -> float:
        self._expire(now)
        return self._log[-1][0] + self.window - now if self._log else 0.0

    def give_back(self, units: float) -> None:
        if self._log:
            self._used -= self._log.pop()[1]

    def counted(self) -> float:
        # Right after an admission this is the window ending at it; the busiest window of all
        # ends at some admission, so the highest of these is the busiest window there was.
        return self._used


@dataclass
class TokenBucket:
    """A bucket of ``limit`` refilled at ``limit / window`` per second, full at the start."""

    limit: float
    window: float
    _level: float | None = None
    _at: float = 0.0

    def _refill(self, now: float) -> float:
        rate = self.limit / self.window
        level = self.limit if self._level is None else min(self.limit, self._level + (now - self._at) * rate)
        self._level, self._at = level, now
        return level

    def take(self, now: float, units: float) -> float | None:
        level = self._refill(now)
        if level >= units or level >= self.limit:
            self._level = level - units
            return None
        return (units - level) / (self.limit / self.window)

    def remaining(self, now: float) -> int:
        return max(0, int(self._refill(now)))

    def reset_in(self, now: float) -> float:
        return (self.limit - self._refill(now)) / (self.limit / self.window)

    def give_back(self, units: float) -> None:
        if self._level is not None:
            self._level = min(self.limit, self._level + units)

    def counted(self) -> float:
        return self.limit - (self.limit if self._level is None else self._level)


def new_window(mode: LimitMode, limit: float, window: float) -> Window:
    """A fresh window of this mode."""
    if mode is LimitMode.FIXED:
        return FixedWindow(limit, window)
    if mode is LimitMode.SLIDING:
        return SlidingLog(limit, window)
    return TokenBucket(limit, window)
