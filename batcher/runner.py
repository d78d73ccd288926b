"""The embedded runner: execute a stored job in this process (``batcher run`` and ``run-job``).

It claims the job's lines from the store in line order, a batch at a time, and feeds them to the
execution core with the in-process rate limiter. Run again after a crash, it first gives back the
lines that a dead process on this host still held (their owner's pid is gone), then goes on where
the job stopped: lines that already succeeded are terminal and never called again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from jobs import store as q
from jobs.db import Store
from jobs.models import Job
from jobs.options import JobOptions, RunMode
from jobs.records import WorkItem
from jobs.settings import Settings
from workers.build import build_executor
from workers.cache import Served, serve_from_cache
from workers.client import ApiClient
from workers.executor import ExecConfig, Executor
from workers.heap import long_lived
from workers.journal import journal_dir, replay_dead
from workers.learned import remember_paces
from workers.leases import recover_dead_leases
from workers.ratelimit import InProcessLimiter
from workers.redact import redact
from workers.stats import Stats
from workers.taskbuild import build_task_engine, is_task_job
from workers.taskengine import TaskEngine


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: the job as stored afterwards and the run's own counters."""

    job: Job
    stats: Stats
    counts: dict[str, int]


ProgressHook = Callable[[Executor], None]


def run_job(
    store: Store,
    settings: Settings,
    job_id: int,
    options: JobOptions,
    *,
    on_start: ProgressHook | None = None,
) -> RunSummary:
    """Run the job's remaining lines to the end (or until paused, cancelled or stopped).

    ``options`` are the job's stored options with this run's flags applied (``JobOptions.merged``).
    A job of task lines (Midjourney, Suno, video) runs on the task engine (``workers.taskengine``).
    """
    if is_task_job(store, job_id):
        return run_task_job(store, settings, job_id, options)
    # Built first: a missing base URL or an unpriced model is refused before the job starts.
    executor = build_executor(
        store, settings, job_id, options, mode=RunMode.EMBEDDED, client=ApiClient, limiter=InProcessLimiter
    )
    replay_dead(store, journal_dir(settings.home))  # a killed run's answers, before its leases go back
    with store.session() as session:
        recover_dead_leases(session, job_id)
        q.start_job(session, job_id)
    # Eight packs a claim: one claim of two packs kept a single call in flight, the next claim
    # waiting on the store; a claim costs less a line the more it takes.
    batch = max(executor.config.concurrency * 2, options.pack_size * 8 if options.pack else 0)
    with long_lived():
        stats = asyncio.run(_run(store, job_id, executor, batch=batch, on_start=on_start))
    with store.session() as session:
        q.complete_if_done(session, job_id)
        job, counts = q.get_job(session, job_id), q.state_counts(session, job_id)
    return RunSummary(job, stats, counts)


async def _run(
    store: Store, job_id: int, executor: Executor, *, batch: int, on_start: ProgressHook | None
) -> Stats:
    async with executor.client:
        if on_start is not None:
            on_start(executor)
        try:
            return await executor.run(claimed_lines(store, job_id, executor, batch=batch))
        finally:
            remember_paces(store, await executor.pacing.refresh())


async def claimed_lines(
    store: Store, job_id: int, executor: Executor, *, batch: int
) -> AsyncIterator[WorkItem]:
    """Claim the job's next lines in batches until none is left or the executor halts.

    Lines the response cache answers are done in the claim itself; only the others are yielded.
    """
    while not executor.halted:
        served = await asyncio.to_thread(_claim, store, job_id, executor.config, batch)
        executor.stats.succeeded += served.hits
        executor.stats.cached += served.hits
        if not served.misses and not served.hits:
            return
        for item in served.misses:
            yield item


def _claim(store: Store, job_id: int, config: ExecConfig, batch: int) -> Served:
    with store.session() as session:
        items = q.claim_lines(
            session, job_id=job_id, owner=config.owner, lease_seconds=config.lease_seconds, limit=batch
        )
        return serve_from_cache(session, items, config.cache)


def run_task_job(store: Store, settings: Settings, job_id: int, options: JobOptions) -> RunSummary:
    """Run a job of task lines to the end: every line claimed, submitted, polled and finished."""
    engine = build_task_engine(
        store, settings, job_id, options, mode=RunMode.EMBEDDED, client=ApiClient, limiter=InProcessLimiter
    )
    replay_dead(store, journal_dir(settings.home))
    with store.session() as session:
        recover_dead_leases(session, job_id)
        q.start_job(session, job_id)
    with long_lived():
        stats = asyncio.run(_run_tasks(store, job_id, engine))
    with store.session() as session:
        q.complete_if_done(session, job_id)
        job, counts = q.get_job(session, job_id), q.state_counts(session, job_id)
    return RunSummary(job, stats, counts)


async def _run_tasks(store: Store, job_id: int, engine: TaskEngine) -> Stats:
    config = engine.config
    async with engine.client, engine.downloader:
        items = await asyncio.to_thread(_claim_all, store, job_id, config.owner, config.lease_seconds)
        return await engine.run(items)


def _claim_all(store: Store, job_id: int, owner: str, lease_seconds: float) -> list[WorkItem]:
    with store.session() as session:
        return q.claim_lines(session, job_id=job_id, owner=owner, lease_seconds=lease_seconds)


def describe_stop(job: Job, secrets: list[str]) -> str:
    """A message for a job that ended without completing."""
    reason = redact(job.last_error or "", secrets)
    return f"job {job.id} is {job.status}" + (f": {reason}" if reason else "")
