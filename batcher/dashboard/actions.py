"""The job page's buttons: pause, resume, cancel, retry failed lines, and export downloads.

Each is the library call its CLI command makes (``batcher pause/resume/cancel/retry/export``);
a refusal is the ``BatcherError`` the command would show, with the same next step.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from batcher.export import ExportFormat, export_job
from jobs import store as q
from jobs.db import Store
from jobs.models import JobStatus
from jobs.settings import Settings


class Action(StrEnum):
    """What a button asks for."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"


def act(store: Store, settings: Settings, job_id: int, action: Action) -> str:
    """Do ``action`` to the job; return what happened, in the words of the CLI."""
    handlers: dict[Action, Callable[[Store, Settings, int], str]] = {
        Action.PAUSE: _pause,
        Action.RESUME: _resume,
        Action.CANCEL: _cancel,
        Action.RETRY: _retry,
    }
    return handlers[action](store, settings, job_id)


def _pause(store: Store, settings: Settings, job_id: int) -> str:
    with store.session() as session:
        q.set_status(session, job_id, JobStatus.PAUSED, allowed=(JobStatus.QUEUED, JobStatus.RUNNING))
    return f"job {job_id} paused; calls in flight may finish"


def _resume(store: Store, settings: Settings, job_id: int) -> str:
    import redis

    from workers.dispatch import celery_publisher, start_distributed

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        enqueued = start_distributed(store, job_id, celery_publisher(), client).enqueued
    finally:
        client.close()
    return f"job {job_id} running on the workers; enqueued {enqueued} lines"


def _cancel(store: Store, settings: Settings, job_id: int) -> str:
    with store.session() as session:
        n = q.cancel_job(session, job_id)
    return f"job {job_id} cancelled: {n} lines will not run; calls in flight may finish"


def _retry(store: Store, settings: Settings, job_id: int) -> str:
    with store.session() as session:
        n = q.retry_failed(session, job_id)
    return f"job {job_id}: {n} failed lines are pending again; resume it or `batcher run-job {job_id}`"


@dataclass(frozen=True)
class Download:
    """An exported file, in a folder of its own the response removes once sent."""

    path: Path
    folder: Path
    filename: str
    media_type: str


MEDIA_TYPES = {
    ExportFormat.JSONL: "application/x-ndjson",
    ExportFormat.CSV: "text/csv",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
}


def export_download(store: Store, job_id: int, fmt: ExportFormat) -> Download:
    """Export the job (as ``batcher export`` does) into a temporary file to send."""
    with store.session() as session:
        q.cancel_left(session, job_id)
    folder = Path(tempfile.mkdtemp(prefix="batcher-export-"))
    filename = f"job-{job_id}.{fmt.value}"
    export_job(store, job_id, folder / filename, fmt=fmt)
    return Download(folder / filename, folder, filename, MEDIA_TYPES[fmt])
