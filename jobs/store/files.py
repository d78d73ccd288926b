"""The result files a job's lines point to (speech audio): where they are, for exports and deletes.

Audio is written by whichever process ran the line, under its own ``BATCHER_HOME/results``; the
store keeps each file's path as that process saw it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.store.common import REQUEST_TABLE

_req = REQUEST_TABLE


@dataclass(frozen=True)
class AudioFiles:
    """How many audio files a job's lines point to, and the folder the first was written to."""

    count: int
    folder: str | None


def audio_files(session: Session, job_id: int) -> AudioFiles:
    """The job's audio files: their number and their folder (``results/job-N`` of the writer)."""
    has_audio = (_req.c.job_id == job_id) & _req.c.audio_path.is_not(None)
    count = session.connection().execute(sa.select(func.count()).where(has_audio)).scalar_one()
    query = sa.select(_req.c.audio_path).where(has_audio).order_by(_req.c.id).limit(1)
    first = session.connection().execute(query).scalar_one_or_none()
    return AudioFiles(int(count), str(PurePath(first).parent) if first else None)


def audio_paths(session: Session, job_ids: Sequence[int], *, chunk: int = 1000) -> Iterator[str]:
    """Every audio file path of these jobs, streamed in chunks."""
    last = 0
    while True:
        query = (
            sa.select(_req.c.id, _req.c.audio_path)
            .where(_req.c.job_id.in_(job_ids), _req.c.audio_path.is_not(None), _req.c.id > last)
            .order_by(_req.c.id)
            .limit(chunk)
        )
        rows = session.connection().execute(query).all()
        if not rows:
            return
        last = rows[-1][0]
        yield from (str(row[1]) for row in rows)
