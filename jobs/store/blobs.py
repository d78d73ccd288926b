"""The SQL side of the blob store (``jobs.blobs``): blob rows, their chunks, and which jobs use them.

SQL in here only. A blob's bytes are ``blob_chunk`` rows of at most ``CHUNK_BYTES`` (one
executemany per blob, so a 25 MB file is 25 rows and never one 25 MB parameter), read back in
``seq`` order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlmodel import Session

from jobs.models import Blob, BlobChunk, JobBlob, utcnow

_blob = Blob.__table__  # type: ignore[attr-defined]
_chunk = BlobChunk.__table__  # type: ignore[attr-defined]
_job_blob = JobBlob.__table__  # type: ignore[attr-defined]


def blob_location(session: Session, sha256: str) -> str | None:
    """Where a blob's bytes are (``db`` or ``dir``), or None when the store has no such blob."""
    query = sa.select(_blob.c.location).where(_blob.c.sha256 == sha256)
    value = session.connection().execute(query).scalar_one_or_none()
    return None if value is None else str(value)


def insert_blob(session: Session, sha256: str, size: int, location: str, chunks: Iterable[bytes]) -> None:
    """Add a blob row and, for ``db`` blobs, its chunks (the caller checked it is new)."""
    conn = session.connection()
    conn.execute(sa.insert(_blob).values(sha256=sha256, size=size, location=location, created_at=utcnow()))
    rows = [{"sha256": sha256, "seq": i, "data": data} for i, data in enumerate(chunks)]
    if rows:
        conn.execute(sa.insert(_chunk), rows)


def link_blobs(session: Session, job_id: int, sha256s: Iterable[str]) -> None:
    """Record that the job uses these blobs."""
    rows = [{"job_id": job_id, "sha256": sha} for sha in sha256s]
    if rows:
        session.connection().execute(sa.insert(_job_blob), rows)


def blob_chunks(session: Session, sha256: str) -> Iterator[bytes]:
    """A ``db`` blob's bytes, chunk by chunk."""
    query = sa.select(_chunk.c.data).where(_chunk.c.sha256 == sha256).order_by(_chunk.c.seq)
    for row in session.connection().execute(query):
        yield bytes(row[0])


def unlink_jobs(session: Session, job_ids: Sequence[int]) -> list[str]:
    """Forget the jobs' use of blobs; delete the blobs no job uses any more.

    Returns the sha256 of deleted ``dir`` blobs: their files are the caller's to remove after
    the commit.
    """
    conn = session.connection()
    conn.execute(sa.delete(_job_blob).where(_job_blob.c.job_id.in_(list(job_ids))))
    used = sa.select(_job_blob.c.sha256)
    orphans = sa.select(_blob.c.sha256, _blob.c.location).where(_blob.c.sha256.not_in(used))
    rows = conn.execute(orphans).all()
    shas = [str(r[0]) for r in rows]
    if shas:
        conn.execute(sa.delete(_chunk).where(_chunk.c.sha256.in_(shas)))
        conn.execute(sa.delete(_blob).where(_blob.c.sha256.in_(shas)))
    return [str(r[0]) for r in rows if r[1] == "dir"]
