"""What the dashboard's pages show, read from the store: job summaries, a job's live view, its lines.

One ``Board`` per dashboard process keeps, per job, the ``Tally`` (calls over time, usage per
model: incremental, see ``batcher.dashboard.tally``) and the samples its rates come from. Every
read is a page or an aggregate of ``jobs.store.dashboard``; nothing here walks a job's lines. A
job that has not been active for ``SETTLE_S`` is read once more and then left alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from batcher.dashboard.tally import (
    SETTLE_S,
    ModelCost,
    ProviderCost,
    Rate,
    Sampler,
    Series,
    Tally,
    model_costs,
    provider_costs,
)
from batcher.pace_status import limiter_views
from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.models import ACTIVE_JOB_STATUSES, Job, JobStatus
from jobs.options import JobOptions, RunMode
from jobs.settings import Settings
from workers.pace import limit_in_force
from workers.prices import PriceBook, load_prices

RECENT_S = 10  # the pace shown is of the calls of the last this many seconds
PACE_TTL_S = 3.0  # the limiter's view is read again after this long


@dataclass(frozen=True)
class JobSummary:
    """One job as the jobs page lists it."""

    id: int
    name: str
    status: str
    mode: str
    tag: str | None
    total: int
    succeeded: int
    failed: int
    cancelled: int
    running: int
    lines_per_s: float | None
    eta_s: float | None
    tokens: int
    cost_usd: Decimal | None  # None: no model of the job has a price
    created_at: str
    last_error: str | None

    @property
    def pending(self) -> int:
        """Lines neither finished nor running."""
        return max(0, self.total - self.succeeded - self.failed - self.cancelled - self.running)

    def percent(self, part: int) -> float:
        """``part`` lines as a percentage of the job's lines (for the progress bar)."""
        return 100.0 * part / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the JSON the pages poll."""
        data = asdict(self)
        data["pending"] = self.pending
        data["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        return data


@dataclass(frozen=True)
class Pace:
    """The pace in force for a job, as seen from the store and the shared limiter."""

    requests_per_s: float
    tokens_per_s: float
    limit_rps: float | None
    limit_source: str
    in_flight: int
    ceiling: int
    rate_limited: int


@dataclass(frozen=True)
class JobView:
    """Everything the job page shows and polls."""

    summary: JobSummary
    pace: Pace
    series: Series
    costs: list[ModelCost]
    failures: list[q.FailedRow]
    options: dict[str, object]
    providers: list[ProviderCost] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the JSON the job page polls."""
        costs, providers = ([_money(asdict(c)) for c in rows] for rows in (self.costs, self.providers))
        return {
            "job": self.summary.to_dict(),
            "pace": asdict(self.pace),
            "series": asdict(self.series),
            "costs": costs,
            "providers": providers,
            "failures": [asdict(f) for f in self.failures],
            "options": self.options,
        }


def _money(row: dict[str, Any]) -> dict[str, Any]:
    """A cost row for JSON: its USD as an exact decimal string."""
    return row | {"cost_usd": None if row["cost_usd"] is None else str(row["cost_usd"])}


@dataclass
class _Cached:
    at: float = 0.0
    value: Any = None


@dataclass
class Board:
    """The dashboard's reads over one store (see the module docstring)."""

    store: Store
    settings: Settings
    sampler: Sampler = field(default_factory=Sampler)
    _tallies: dict[int, Tally] = field(default_factory=dict)
    _quiet_since: dict[int, float] = field(default_factory=dict)
    _books: dict[tuple[str, ...], PriceBook] = field(default_factory=dict)
    _views: dict[int, _Cached] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jobs(
        self, *, status: str | None = None, tag: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[JobSummary], int]:
        """One page of job summaries, newest first, and how many jobs match."""
        with self.store.session() as session:
            page = q.page_of_jobs(session, status=status, tag=tag, limit=limit, offset=offset)
            found = list(session.exec(select(Job).where(col(Job.id).in_(page.job_ids))))
            running = q.running_lines(session, page.job_ids)
            rows = sorted(found, key=lambda j: -(j.id or 0))
            return [self._summary(session, job, running.get(job.id or 0, 0)) for job in rows], page.total

    def job(self, job_id: int, *, failures: int = 50) -> JobView:
        """The job page's view of one job (``JobNotFound`` if there is no such job)."""
        with self.store.session() as session:
            job = q.get_job(session, job_id)
            running = q.running_lines(session, [job_id]).get(job_id, 0)
            summary = self._summary(session, job, running)
            in_flight = q.calls_in_flight(session, job_id)
            failed = q.failed_lines(session, job_id, limit=failures)
        options = q.options_of(job)
        tally, book = self._tally(job_id), self._book(options)
        series = tally.series()
        return JobView(
            summary,
            self._pace(job, options, tally, in_flight or running),
            series,
            model_costs(tally.models(), book, options.group),
            failed,
            options.public(),
            provider_costs(tally.routed(), book, options.group),
        )

    def line(self, job_id: int, line_no: int) -> q.LineDetail | None:
        """One line with its raw answer (``JobNotFound`` if there is no such job)."""
        with self.store.session() as session:
            q.get_job(session, job_id)
            return q.line_detail(session, job_id, line_no)

    # --- parts -------------------------------------------------------------------------------

    def _summary(self, session: Session, job: Job, running: int) -> JobSummary:
        assert job.id is not None
        tally = self._refreshed(session, job)
        options = q.options_of(job)
        done = job.succeeded + job.failed + job.cancelled
        rate = self.sampler.rate(job.id, done, tally.tokens()) if job.status in ACTIVE_JOB_STATUSES else None
        costs = model_costs(tally.models(), self._book(options), options.group)
        return JobSummary(
            id=job.id, name=job.name, status=job.status, mode=job.mode, tag=options.tag, total=job.total,
            succeeded=job.succeeded, failed=job.failed, cancelled=job.cancelled, running=running,
            lines_per_s=rate.lines_per_s if rate else None, eta_s=_eta(job.total - done, rate),
            tokens=tally.tokens(), cost_usd=_total_cost(costs), created_at=job.created_at.isoformat(),
            last_error=job.last_error,
        )  # fmt: skip

    def _tally(self, job_id: int) -> Tally:
        with self._lock:
            return self._tallies.setdefault(job_id, Tally(job_id))

    def _refreshed(self, session: Session, job: Job) -> Tally:
        """The job's tally, read again unless the job has been quiet for ``SETTLE_S``."""
        assert job.id is not None
        tally, now = self._tally(job.id), time.monotonic()
        active = job.status in (*ACTIVE_JOB_STATUSES, JobStatus.PAUSED)
        quiet = self._quiet_since.setdefault(job.id, now) if not active else None
        if active:
            self._quiet_since.pop(job.id, None)
        if quiet is None or now - quiet <= 2 * SETTLE_S or not tally.read_once:
            tally.refresh(session)
        return tally

    def _book(self, options: JobOptions) -> PriceBook:
        key = options.prices
        if key not in self._books:
            try:
                self._books[key] = load_prices([Path(p) for p in key])
            except BatcherError:  # a price file that moved: the built-in prices still apply
                self._books[key] = load_prices([])
        return self._books[key]

    def _pace(self, job: Job, options: JobOptions, tally: Tally, in_flight: int) -> Pace:
        assert job.id is not None
        recent = _recent(tally.series(), time.time())
        limit, source = self._limit(job, options)
        return Pace(
            requests_per_s=recent[0],
            tokens_per_s=recent[1],
            limit_rps=limit,
            limit_source=source,
            in_flight=in_flight,
            ceiling=options.concurrency_in(_mode(job)),
            rate_limited=tally.sums()[1],
        )

    def _limit(self, job: Job, options: JobOptions) -> tuple[float | None, str]:
        """The limit in force, read from where the pace lives at most every ``PACE_TTL_S``."""
        assert job.id is not None
        cached = self._views.setdefault(job.id, _Cached())
        now = time.monotonic()
        if cached.value is None or now - cached.at > PACE_TTL_S:
            with self.store.session() as session:
                models = q.job_models(session, job.id)
            views = limiter_views(self.store, self.settings, models, options.rpm, mode=_mode(job))
            cached.at, cached.value = now, limit_in_force(views)
        value: tuple[float | None, str] = cached.value
        return value


def _mode(job: Job) -> RunMode:
    return RunMode.CELERY if job.mode == RunMode.CELERY else RunMode.EMBEDDED


def _eta(left: int, rate: Rate | None) -> float | None:
    if rate is None or not rate.lines_per_s or rate.lines_per_s <= 0:
        return None
    return left / rate.lines_per_s


def _total_cost(costs: list[ModelCost]) -> Decimal | None:
    priced = [c.cost_usd for c in costs if c.cost_usd is not None]
    if costs and not priced:
        return None
    return sum(priced, Decimal(0))


def _recent(series: Series, now: float) -> tuple[float, float]:
    """(requests/s, tokens/s) over the last ``RECENT_S`` seconds of the series."""
    since = now - RECENT_S
    picked = [i for i, t in enumerate(series.t) if t + series.width_s > since]
    if not picked:
        return 0.0, 0.0
    span = max(float(RECENT_S), float(series.width_s))
    calls = sum(series.requests[i] * series.width_s for i in picked)
    tokens = sum(series.tokens[i] * series.width_s for i in picked)
    return calls / span, tokens / span
