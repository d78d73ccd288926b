"""A job's calls over its life and its usage per model, kept up to date from the store incrementally.

The first look at a job sums its attempts once in SQL (by second and by model); every later look
reads only attempts with a higher id. Attempt ids are handed out when a transaction inserts them,
and on PostgreSQL two workers' transactions can commit out of id order, so the ids above the last
*settled* id are summed again at every look (a few seconds of calls), and an id becomes settled
once it was seen ``SETTLE_S`` seconds ago: by then the transaction of any lower id has committed
(a flush takes a fraction of a second). At the first look, the ids of attempts that started
``OLD_S`` before are settled at once (a call's rows are written when it ends, within its
timeout), so a page opened on a big job sums it once, not at every look of its first seconds.
A packed call whose attempt rows straddle a settle point counts as two calls in the chart: rare,
and only in requests/s.

Rates for the jobs page come from ``Sampler``: the done counters of two looks ``WINDOW_S`` apart,
the way ``batcher status --watch`` takes them; nothing is read for them but the job row.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal

from sqlmodel import Session

from batcher.usage import route_value
from jobs import store as q
from jobs.models import utcnow
from workers.budget import spend_of
from workers.prices import PriceBook

SETTLE_S = 10.0
OLD_S = 300.0  # past the longest call (--timeout 120 s by default) and its flush
WINDOW_S = 30.0
MAX_POINTS = 240  # points of a chart: buckets are merged to at most this many


@dataclass
class _Part:
    """Sums over a range of attempt ids."""

    buckets: dict[int, list[int]] = field(default_factory=dict)  # second → [calls, 429s, tokens]
    models: dict[tuple[str, str], q.ModelUsage] = field(default_factory=dict)  # (model, provider)
    last_id: int = 0

    def add(self, buckets: list[q.TimeBucket], models: list[q.ModelUsage]) -> None:
        for b in buckets:
            row = self.buckets.setdefault(b.start, [0, 0, 0])
            row[0], row[1], row[2] = row[0] + b.calls, row[1] + b.rate_limited, row[2] + b.tokens
            self.last_id = max(self.last_id, b.last_id)
        for m in models:
            old = self.models.get((m.model, m.provider))
            self.models[(m.model, m.provider)] = m if old is None else _plus(old, m)


def _plus(a: q.ModelUsage, b: q.ModelUsage) -> q.ModelUsage:
    return replace(a, calls=a.calls + b.calls, usage=a.usage + b.usage)


@dataclass(frozen=True)
class Series:
    """A job's calls over its life, one point per ``width_s`` seconds (rates per second)."""

    t: list[int]  # epoch seconds of each point's start
    requests: list[float]
    rate_limited: list[float]
    tokens: list[float]
    width_s: int


@dataclass(frozen=True)
class ModelCost:
    """What one model's calls used and cost (USD; None: no price known)."""

    model: str
    calls: int
    tokens: int
    characters: int
    cost_usd: Decimal | None


class Tally:
    """The sums of one job: settled ids kept, the rest summed again at each ``refresh``."""

    def __init__(self, job_id: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self._clock = clock
        self._settled = _Part()
        self._fresh = _Part()
        self._seen: deque[tuple[float, int]] = deque()  # (when, highest id seen then)
        self._lock = threading.Lock()
        self.read_once = False

    def refresh(self, session: Session) -> None:
        """Read what changed since the last settled id."""
        with self._lock:
            self.read_once = True
            now = self._clock()
            settle_to = self._settle_point(now)
            if not self._seen and not self._settled.last_id:
                settle_to = q.last_attempt_before(session, self.job_id, utcnow() - timedelta(seconds=OLD_S))
            if settle_to > self._settled.last_id:
                self._settled.add(*self._read(session, self._settled.last_id, settle_to))
                self._settled.last_id = settle_to
            fresh = _Part(last_id=self._settled.last_id)
            fresh.add(*self._read(session, self._settled.last_id, None))
            self._fresh = fresh
            self._seen.append((now, fresh.last_id))

    @property
    def settled_id(self) -> int:
        """The highest attempt id whose sums are kept and never read again."""
        return self._settled.last_id

    def _settle_point(self, now: float) -> int:
        point = self._settled.last_id
        while self._seen and now - self._seen[0][0] >= SETTLE_S:
            point = max(point, self._seen.popleft()[1])
        return point

    def _read(
        self, session: Session, after: int, upto: int | None
    ) -> tuple[list[q.TimeBucket], list[q.ModelUsage]]:
        buckets = q.timeline(session, self.job_id, after_id=after, upto_id=upto)
        return buckets, q.model_usage(session, self.job_id, after_id=after, upto_id=upto)

    def _parts(self) -> tuple[_Part, _Part]:
        with self._lock:
            return self._settled, self._fresh

    def series(self, max_points: int = MAX_POINTS) -> Series:
        """The calls per second over the job's life, merged to at most ``max_points`` points."""
        merged: dict[int, list[int]] = {}
        for part in self._parts():
            for second, row in part.buckets.items():
                cell = merged.setdefault(second, [0, 0, 0])
                for i in range(3):
                    cell[i] += row[i]
        return resample(merged, max_points)

    def routed(self) -> list[q.ModelUsage]:
        """Usage per model and provider of every call so far."""
        total = _Part()
        for part in self._parts():
            total.add([], list(part.models.values()))
        return sorted(total.models.values(), key=lambda m: (m.model, m.provider))

    def models(self) -> list[q.ModelUsage]:
        """Usage per model of every call so far, whatever the provider."""
        merged: dict[str, q.ModelUsage] = {}
        for routed in self.routed():
            m = replace(routed, provider="")
            merged[m.model] = m if m.model not in merged else _plus(merged[m.model], m)
        return list(merged.values())

    def sums(self) -> tuple[int, int, int]:
        """(calls, calls answered 429, tokens) of the job so far."""
        rows = [row for part in self._parts() for row in part.buckets.values()]
        return sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows)

    def tokens(self) -> int:
        """Tokens of every call that answered with usage."""
        return self.sums()[2]


def resample(buckets: dict[int, list[int]], max_points: int) -> Series:
    """Per-second sums merged into equal spans covering first to last second, zeros where idle."""
    if not buckets:
        return Series([], [], [], [], 1)
    first, last = min(buckets), max(buckets)
    width = max(1, math.ceil((last - first + 1) / max_points))
    n = (last - first) // width + 1
    sums = [[0, 0, 0] for _ in range(n)]
    for second, row in buckets.items():
        cell = sums[(second - first) // width]
        for i in range(3):
            cell[i] += row[i]
    t = [first + i * width for i in range(n)]
    requests, limited, tokens = ([cell[i] / width for cell in sums] for i in range(3))
    return Series(t, requests, limited, tokens, width_s=width)


def model_costs(rows: list[q.ModelUsage], book: PriceBook, group: str | None) -> list[ModelCost]:
    """Each model's usage with its cost at the book's prices (None where the model has no price)."""
    ratio = book.group_ratio(group)
    return [
        ModelCost(
            row.model,
            row.calls,
            row.usage.tokens,
            row.usage.characters,
            spend_of([row], book, ratio) if book.lookup(row.model) is not None else None,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ProviderCost:
    """What the calls that went through one provider and key used and cost (USD).

    ``cost_usd`` is None when none of its models has a price, and counts only the priced ones
    otherwise (``unpriced`` names the rest), as the job's total does.
    """

    provider: str  # provider/key label (key by name and last 4 characters); "default" unrouted
    calls: int
    tokens: int
    characters: int
    cost_usd: Decimal | None
    unpriced: tuple[str, ...]


def provider_costs(rows: list[q.ModelUsage], book: PriceBook, group: str | None) -> list[ProviderCost]:
    """Each provider's usage (summed over its models) with its cost at the book's prices."""
    by: dict[str, list[ModelCost]] = {}
    for row, cost in zip(rows, model_costs(rows, book, group), strict=True):
        by.setdefault(route_value("key", row.provider or None), []).append(cost)
    return [_provider_cost(provider, costs) for provider, costs in sorted(by.items())]


def _provider_cost(provider: str, costs: list[ModelCost]) -> ProviderCost:
    priced = [c.cost_usd for c in costs if c.cost_usd is not None]
    return ProviderCost(
        provider,
        calls=sum(c.calls for c in costs),
        tokens=sum(c.tokens for c in costs),
        characters=sum(c.characters for c in costs),
        cost_usd=sum(priced, Decimal(0)) if priced else None,
        unpriced=tuple(sorted({c.model for c in costs if c.cost_usd is None})),
    )


@dataclass(frozen=True)
class Rate:
    """Lines and tokens per second over the last ``WINDOW_S`` seconds; None: not known yet."""

    lines_per_s: float | None
    tokens_per_s: float | None


class Sampler:
    """Rates from the counters of successive looks at a job (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[int, deque[tuple[float, int, int]]] = {}
        self._lock = threading.Lock()

    def rate(self, job_id: int, done: int, tokens: int = 0) -> Rate:
        """Record this look and return the rates since the oldest look within the window."""
        now = self._clock()
        with self._lock:
            samples = self._samples.setdefault(job_id, deque())
            while len(samples) > 1 and now - samples[1][0] >= WINDOW_S:
                samples.popleft()
            if not samples or now - samples[-1][0] >= 1.0:
                samples.append((now, done, tokens))
            then, done0, tokens0 = samples[0]
        if now - then < 1.0:
            return Rate(None, None)
        return Rate((done - done0) / (now - then), (tokens - tokens0) / (now - then))
