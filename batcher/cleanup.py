"""Removing jobs that are no longer wanted: ``batcher delete`` and ``batcher prune``.

A deleted job leaves nothing behind: its attempts, lines and row go in one transaction, then its
result files (speech audio) and the folder that held them, and the input files (``jobs.blobs``)
no other job uses. Files another host wrote are not on
this machine; the summary counts the ones it could not find instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jobs import store as q
from jobs.blobs import BlobStore
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.models import Job, JobStatus, utcnow
from workers.resultfiles import job_folder

PRUNE_STATUSES = (JobStatus.COMPLETED, JobStatus.CANCELLED)  # finished: nothing will run again
_AGE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` or ``90m`` as a duration."""
    match = _AGE.match(text.lower())
    if match is None:
        raise ConfigError(f"{text!r} is not an age; use a number and m, h, d or w, e.g. 30d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class DeleteSummary:
    """What a delete removed."""

    footprint: q.JobFootprint
    files_removed: int
    files_missing: int


def jobs_by_id(store: Store, job_ids: Sequence[int]) -> list[Job]:
    """The jobs with these ids (an unknown id raises ``JobNotFound``)."""
    with store.session() as session:
        return [q.get_job(session, job_id) for job_id in job_ids]


def size_of(store: Store, job_ids: Sequence[int]) -> q.JobFootprint:
    """What deleting these jobs would remove."""
    with store.session() as session:
        return q.footprint(session, job_ids)


def delete(
    store: Store, job_ids: Sequence[int], *, blob_dir: Path | None = None, results_dir: Path | None = None
) -> DeleteSummary:
    """Delete the jobs, then their result files and the input files no other job uses.

    With ``results_dir``, the files of each job's folder there go too (saved images: their paths
    are inside answer bodies, not in a column).
    """
    with store.session() as session:
        paths = [Path(p) for p in q.audio_paths(session, job_ids)]
        if results_dir is not None:
            jobs = [q.get_job(session, job_id) for job_id in job_ids]
            folders = [job_folder(results_dir, j.id or 0, j.created_at) for j in jobs]
            paths += [p for f in folders if f.is_dir() for p in f.iterdir() if p not in paths]
        removed = q.delete_jobs(session, job_ids)
    if blob_dir is not None:
        for sha256 in removed.folder_blobs:
            BlobStore(blob_dir).path_of(sha256).unlink(missing_ok=True)
    gone = missing = 0
    for path in paths:
        try:
            path.unlink()
            gone += 1
        except FileNotFoundError:
            missing += 1
    for folder in {p.parent for p in paths}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return DeleteSummary(removed, gone, missing)


def prunable(
    store: Store, older_than: timedelta, statuses: Sequence[JobStatus], *, now: datetime | None = None
) -> list[Job]:
    """Jobs in these statuses finished (or created, if never finished) more than ``older_than`` ago."""
    with store.session() as session:
        return q.jobs_older_than(session, (now or utcnow()) - older_than, statuses)
