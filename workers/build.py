"""Assembling the execution core for one job: the one place that turns options into an executor.

The embedded runner (``batcher run``, ``run-job``) and a worker's chunk task both call
``build_executor``; they differ only in where lines run (``RunMode``: concurrency and lease
defaults, ``jobs.options.PLACEMENTS``) and in where the client and limiter come from (a worker
process keeps both across messages, see ``workers.runtime``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from jobs import store as q
from jobs.blobs import blob_reader
from jobs.db import Store
from jobs.options import PLACEMENTS, JobOptions, RunMode
from jobs.settings import Settings
from workers.budget import job_budget
from workers.client import ApiClient, Caller, ClientConfig, client_config
from workers.executor import ExecConfig, Executor
from workers.journal import journal_dir, open_journal
from workers.learned import job_limits
from workers.leases import new_owner
from workers.metrics import observer_for
from workers.pacing import Pacing
from workers.packing import pack_limits
from workers.ratelimit import Limiter, Limits
from workers.resultfiles import job_folder
from workers.routing import build_router
from workers.sink import StoreSink

ClientFactory = Callable[[ClientConfig], ApiClient]
LimiterFactory = Callable[[Limits], Limiter]


class PacingSource(Protocol):
    """Where a worker's executors of one job share their pacing (``WorkerRuntime.pacing``)."""

    def pacing(self, job_id: int, limiter: Limiter, *, concurrency: int, provider: str) -> Pacing:
        """The job's pacing in this process."""
        ...


def caller(
    settings: Settings, base: ClientConfig, *, client: ClientFactory, limiter: LimiterFactory
) -> Caller:
    """The environment's one client, or a router over the providers of ``batcher.toml``."""
    if settings.config_path() is None:
        return client(base)
    return build_router(settings.providers(), base, client=client, limiter=limiter)


def build_executor(
    store: Store,
    settings: Settings,
    job_id: int,
    options: JobOptions,
    *,
    mode: RunMode,
    client: ClientFactory,
    limiter: LimiterFactory,
    owner: str | None = None,
    lines: int | None = None,
    pacings: PacingSource | None = None,
) -> Executor:
    """The executor for one job's lines, run ``mode``'s way; ``lines`` caps concurrency when known.

    With ``pacings`` the executor shares the job's pacing with its other executors in the process,
    under the job's ceiling (not capped by ``lines``: they run side by side).
    """
    ceiling = concurrency = options.concurrency_in(mode)
    if lines is not None:
        concurrency = min(concurrency, lines)
    with store.session() as session:
        created_at = q.get_job(session, job_id).created_at
    config = ExecConfig(
        results_dir=job_folder(Path(settings.results_dir), job_id, created_at),
        concurrency=concurrency,
        max_attempts=options.max_attempts,
        max_wait=options.max_wait,
        lease_seconds=PLACEMENTS[mode].lease_seconds,
        pack=pack_limits(options),
        cache=options.cache,
        owner=owner or new_owner(),
    )
    client_conf = client_config(settings, timeout=options.timeout, max_connections=concurrency)
    # Without --rpm the pace starts from what earlier jobs found on this provider (workers.learned).
    rate_limiter = limiter(job_limits(store, client_conf.provider, options))
    calls = caller(settings, client_conf, client=client, limiter=limiter)
    pacing = None
    if pacings is not None:
        pacing = pacings.pacing(job_id, rate_limiter, concurrency=ceiling, provider=calls.config.provider)
    return Executor(
        client=calls,
        limiter=rate_limiter,
        pacing=pacing,
        sink=StoreSink(store, job_id=job_id, owner=config.owner),
        config=config,
        secrets=settings.secret_values(),
        budget=job_budget(store, job_id, options),
        journal=open_journal(store, journal_dir(settings.home), config.owner),
        blobs=blob_reader(store, settings.blob_dir),
        observer=observer_for(options.prices, options.group),
    )
