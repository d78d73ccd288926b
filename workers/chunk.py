"""Running one broker message: claim its lines in the store, execute them, record the results.

The message carries only a job id and line ids. Everything else (bodies, options, the key) is
read here, in the worker, from the store and the environment. Claiming with a lease makes a
redelivered message harmless: lines already terminal or leased by a live executor are skipped.
A line claimed ``max_attempts`` times without finishing is failed as poison instead of being
handed to yet another worker to kill.

``run_chunk`` returns before its last calls have drained (``workers.handover``): they finish on
the process's loop while the next message is claimed; ``on_end`` gets the chunk's stats then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from jobs import store as q
from jobs.db import Store
from jobs.options import PLACEMENTS, JobOptions, RunMode
from jobs.records import WorkItem
from jobs.settings import Settings
from workers.build import build_executor
from workers.cache import Served, serve_from_cache
from workers.dispatch import celery_later
from workers.endpoints import family_of
from workers.endpoints.taskfamily import TaskFamily
from workers.executor import Executor
from workers.handover import handed_over
from workers.journal import journal_dir, replay_dead
from workers.learned import remember_paces
from workers.leases import LIVE_OWNERS, living, recover_dead_leases
from workers.runtime import WorkerRuntime
from workers.stats import Stats
from workers.taskchunk import run_task_chunk

LEASE_SECONDS = PLACEMENTS[RunMode.CELERY].lease_seconds
log = logging.getLogger(__name__)
EndHook = Callable[[Stats], None]


def claim_chunk(
    store: Store, job_id: int, request_ids: list[int], owner: str, *, journals: Path | None = None
) -> tuple[Served, JobOptions]:
    """Claim the message's lines that still need a call, after failing poison lines.

    Journals of dead processes on this host are replayed first: a line whose answer landed
    before its worker was killed is then terminal, and is not called again. Lines the response
    cache answers are done in the claim's transaction (``workers.cache``).
    """
    if journals is not None:
        replay_dead(store, journals)
    with store.session() as session:
        options = q.job_options(session, job_id)
        recover_dead_leases(session, job_id, current=owner)
        q.fail_overclaimed(session, job_id, max_claims=options.max_attempts, request_ids=request_ids)
        items = q.claim_lines(
            session, job_id=job_id, owner=owner, lease_seconds=LEASE_SECONDS, request_ids=request_ids
        )
        served = serve_from_cache(session, items, options.cache)
        if not served.misses:
            q.complete_if_done(session, job_id)
    return served, options


def run_chunk(
    store: Store,
    settings: Settings,
    job_id: int,
    request_ids: list[int],
    *,
    runtime: WorkerRuntime,
    owner: str,
    on_end: EndHook | None = None,
) -> Stats:
    """Execute the message's claimable lines, returning once the last of them are about to go.

    Returns the stats so far; ``on_end`` gets the chunk's final stats once every line is recorded
    (before this returns when nothing was left to drain).
    """
    end = on_end or (lambda _: None)
    with living(owner):  # from before the claim: see ``workers.leases.living``
        served, options = claim_chunk(store, job_id, request_ids, owner, journals=journal_dir(settings.home))
        items = served.misses
        if not items:
            return _ended(Stats(succeeded=served.hits, cached=served.hits), end)
        if isinstance(family_of(items[0].endpoint), TaskFamily):  # a job's lines are all tasks or none
            stats = run_task_chunk(
                store, settings, job_id, items, options, runtime=runtime, owner=owner, later=celery_later()
            )
            return _ended(stats, end)
        executor = build_executor(
            store,
            settings,
            job_id,
            options,
            mode=RunMode.CELERY,
            client=runtime.client,
            limiter=runtime.limiter,
            owner=owner,
            lines=len(items),
            pacings=runtime,
        )
        LIVE_OWNERS.add(owner)  # until the executor's end, after this task's: ``_run`` lets it go

        def ended(stats: Stats) -> Stats:
            stats.succeeded, stats.cached = stats.succeeded + served.hits, stats.cached + served.hits
            return _ended(stats, end)

        # The hook is called by the run itself, not by a done callback: a future's waiters
        # (``WorkerRuntime.drain``) wake before its callbacks run, so a drained runtime could
        # otherwise still owe the hook its call.
        running = runtime.start(_run(store, executor, items, ended))
        runtime.run(_handed_over(running, executor.stats, len(items)))
    if running.done():
        return running.result()
    running.add_done_callback(_drained)
    stats = dataclasses.replace(executor.stats)
    stats.succeeded, stats.cached = stats.succeeded + served.hits, stats.cached + served.hits
    return stats


async def _handed_over(running: concurrent.futures.Future[Stats], stats: Stats, lines: int) -> None:
    await handed_over(asyncio.wrap_future(running), stats, lines)  # wrapped on the loop's own thread


def _ended(stats: Stats, end: EndHook) -> Stats:
    end(stats)
    return stats


def _drained(done: concurrent.futures.Future[Stats]) -> None:
    """A chunk's run that outlived its task has ended: log the bug that ended it, if one did."""
    if not done.cancelled() and (error := done.exception()) is not None:
        log.error("a chunk's last calls ended in an error", exc_info=error)


async def _run(
    store: Store, executor: Executor, items: list[WorkItem], ended: Callable[[Stats], Stats]
) -> Stats:
    try:
        stats = await executor.run(items)
    finally:
        LIVE_OWNERS.discard(executor.config.owner)
        views = await executor.pacing.refresh()
        await asyncio.to_thread(remember_paces, store, views)
    return ended(stats)
