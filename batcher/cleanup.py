"""Removing jobs that are no longer wanted: ``batcher delete`` and ``batcher prune``.

A deleted job leaves nothing behind: its attempts, lines and row go in one transaction, then its
result files (speech audio) and the folder that held them. Files another host wrote are not on
this machine; the summary counts the ones it could not find instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.models import Job, JobStatus, utcnow

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


def delete(store: Store, job_ids: Sequence[int]) -> DeleteSummary:
    """Delete the jobs, then their result files."""
    with store.session() as session:
        paths = [Path(p) for p in q.audio_paths(session, job_ids)]
        removed = q.delete_jobs(session, job_ids)
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
