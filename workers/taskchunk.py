"""A worker's message of task lines: one pass of the task engine, and the messages that poll later.

A message's task lines are claimed like any others (``workers.chunk``); the engine submits what may
go and polls what is due (``TaskEngine.step``), then gives the lines back, each stamped as enqueued
at the time it is due, and a message is sent for each due time on the ``batcher.tasks`` queue with
that countdown. A worker never sits on a task for its hours: a kill -9 loses at most the pass in
hand, and a line whose message is lost is sent again by the sweeper once its due time is
``STALE_MESSAGE_S`` past (``workers.dispatch``), exactly as a pending line's would be.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable

from jobs import store as q
from jobs.db import Store
from jobs.options import JobOptions, RunMode
from jobs.records import WorkItem
from jobs.settings import Settings
from workers.runtime import WorkerRuntime
from workers.stats import Stats
from workers.taskbuild import build_task_engine
from workers.taskengine import TaskEngine

Later = Callable[[int, list[int], float, int], None]  # (job id, line ids, countdown s, priority)


def run_task_chunk(
    store: Store,
    settings: Settings,
    job_id: int,
    items: list[WorkItem],
    options: JobOptions,
    *,
    runtime: WorkerRuntime,
    owner: str,
    later: Later,
) -> Stats:
    """One engine pass over the claimed task lines; the lines still going get a later message."""
    engine = build_task_engine(
        store, settings, job_id, options, mode=RunMode.CELERY, client=runtime.client, limiter=runtime.limiter,
        owner=owner,
    )  # fmt: skip
    due = runtime.run(_step(engine, items))
    schedule(store, job_id, due, later)
    return engine.stats


async def _step(engine: TaskEngine, items: list[WorkItem]) -> dict[int, float]:
    async with engine.downloader:
        return await engine.step(items)


def schedule(store: Store, job_id: int, due: dict[int, float], later: Later) -> None:
    """Stamp each line with its due time and send one message per second of due times."""
    if not due:
        return
    now = time.time()
    groups: dict[int, list[int]] = defaultdict(list)
    for request_id, at in due.items():
        groups[math.ceil(at)].append(request_id)
    with store.session() as session:
        priority = q.get_job(session, job_id).priority
        for at, ids in groups.items():
            q.mark_enqueued(session, ids, now=float(at))
    for at, ids in sorted(groups.items()):
        later(job_id, ids, max(0.0, at - now), priority)
