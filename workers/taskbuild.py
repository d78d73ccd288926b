"""Assembling the task engine for one job (``workers.taskengine``), embedded or on a worker.

Task lines share the job's options with every other route (attempts, timeout, the rate limits)
and add their own: ``poll_interval``, ``download`` and ``task_deadline``. The engine paces its
submits and polls through the same limiter a job's other calls use.
"""

from __future__ import annotations

from pathlib import Path

from jobs import store as q
from jobs.blobs import blob_reader
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import JobStateError
from jobs.options import PLACEMENTS, JobOptions, RunMode
from jobs.settings import Settings
from jobs.store import tasks as tq
from workers.budget import job_budget
from workers.build import ClientFactory, LimiterFactory
from workers.client import client_config
from workers.downloads import Downloader
from workers.endpoints import family_of
from workers.endpoints.taskfamily import TaskFamily
from workers.learned import job_limits
from workers.leases import new_owner
from workers.pacing import Pacing
from workers.resultfiles import job_folder
from workers.taskengine import TaskEngine
from workers.tasklines import TaskConfig


def is_task_job(store: Store, job_id: int) -> bool:
    """Whether the job's lines are task lines; a job mixing them with other routes is refused."""
    with store.session() as session:
        routes = tq.job_endpoints(session, job_id)
    tasks = [r for r in routes if isinstance(family_of(Endpoint(r)), TaskFamily)]
    if tasks and len(tasks) != len(routes):
        others = ", ".join(r for r in routes if r not in tasks)
        raise JobStateError(
            f"job {job_id} mixes task routes ({', '.join(tasks)}) with other routes ({others}); "
            "submit the task lines as a file of their own"
        )
    return bool(tasks)


def task_config(options: JobOptions, *, results_dir: Path, mode: RunMode, owner: str) -> TaskConfig:
    """The engine's configuration from the job's options."""
    return TaskConfig(
        results_dir=results_dir,
        owner=owner,
        poll_interval=options.poll_interval,
        deadline=options.task_deadline,
        download=options.download,
        max_attempts=options.max_attempts,
        lease_seconds=PLACEMENTS[mode].lease_seconds,
    )


def build_task_engine(
    store: Store,
    settings: Settings,
    job_id: int,
    options: JobOptions,
    *,
    mode: RunMode,
    client: ClientFactory,
    limiter: LimiterFactory,
    owner: str | None = None,
) -> TaskEngine:
    """The task engine for one job's lines, run ``mode``'s way."""
    with store.session() as session:
        created_at = q.get_job(session, job_id).created_at
    concurrency = options.concurrency_in(mode)
    conf = client_config(settings, timeout=options.timeout, max_connections=concurrency)
    api = client(conf)
    pacing = Pacing(
        limiter(job_limits(store, conf.provider, options)),
        concurrency=concurrency,
        provider=conf.provider,
        adaptive=False,
    )
    config = task_config(
        options,
        results_dir=job_folder(Path(settings.results_dir), job_id, created_at),
        mode=mode,
        owner=owner or new_owner(),
    )
    return TaskEngine(
        store=store,
        client=api,
        pacing=pacing,
        config=config,
        job_id=job_id,
        blobs=blob_reader(store, settings.blob_dir),
        downloader=Downloader(base_url=conf.base_url, key=conf.api_key),
        secrets=settings.secret_values(),
        budget=job_budget(store, job_id, options),
    )
