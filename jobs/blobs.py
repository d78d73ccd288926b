"""The blob store: input files (audio to transcribe, images to edit) kept by content, for any worker.

A line names its file as a path beside the input file or as a ``data:`` URL; the workers that
send it may run on other machines, so ingest copies the file into the store and the line's body
keeps only a reference (``StoredFile``: ``{"blob": sha256, "name", "bytes", "seconds"}``).

Design:

- **Content-addressed, deduplicated.** A blob is named by the sha256 of its bytes; a file named
  by ten thousand lines, or by two jobs, is stored once. ``job_blob`` rows say which jobs use
  it, and deleting the last of them deletes it (``jobs.store.blobs.unlink_jobs``).
- **In the SQL store by default**, as ``blob_chunk`` rows of at most ``CHUNK_BYTES``: streamed
  from the file in chunks at ingest, so a 25 MB file is never one SQL parameter; read back by
  the worker when it builds the call. Nothing to share but the database, which every worker
  reaches already.
- **Or in a shared folder** (``BATCHER_BLOB_DIR``, e.g. an NFS mount every worker sees as the
  same path): ``DIR/ab/abcdef…`` written to a temporary name and renamed, the sha256 checked on
  the way. The ``blob`` row still says it exists and where; a worker whose folder lacks it
  stops the job with a ``BlobMissing`` naming the folder, it never fails lines for it.
- **All or nothing.** Blob rows and chunks are written in ingest's transaction, so a refused
  file stores none. Folder files cannot roll back: the ones this ingest created are removed
  when it fails (``discard_new``).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session

from jobs.db import Store
from jobs.errors import BlobMissing
from jobs.store import blobs as sql

CHUNK_BYTES = 1024 * 1024
BLOB_KEY = "blob"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file a line sends, as its stored body names it: the blob, the file's name, size, length."""

    sha256: str
    name: str
    size: int
    seconds: float | None = None  # audio: its duration, read from the file at ingest

    def as_json(self) -> dict[str, Any]:
        """The reference a stored body holds in place of the path."""
        value: dict[str, Any] = {BLOB_KEY: self.sha256, "name": self.name, "bytes": self.size}
        if self.seconds is not None:
            value["seconds"] = self.seconds
        return value

    @classmethod
    def from_json(cls, value: Any) -> StoredFile | None:
        """The reference in a stored body's field, or None when the field holds none."""
        if not isinstance(value, Mapping) or not isinstance(value.get(BLOB_KEY), str):
            return None
        seconds = value.get("seconds")
        return cls(str(value[BLOB_KEY]), str(value.get("name") or "file"), int(value.get("bytes") or 0),
                   float(seconds) if isinstance(seconds, int | float) else None)  # fmt: skip


def stored_files(value: Any) -> list[StoredFile]:
    """The references in a field: one, or a list of them (``image`` of an edit takes several)."""
    items = value if isinstance(value, list) else [value]
    return [f for f in (StoredFile.from_json(v) for v in items) if f is not None]


@dataclass
class BlobStore:
    """Writes and reads blobs (see the module docstring); ``folder`` is ``BATCHER_BLOB_DIR``."""

    folder: Path | None = None
    _known: set[str] = field(default_factory=set)  # stored (or found) in this session already
    _created: list[Path] = field(default_factory=list)

    def put(self, session: Session, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store the bytes ``chunks`` yields under ``sha256`` unless the store has them already."""
        if sha256 in self._known:
            return
        self._known.add(sha256)
        if sql.blob_location(session, sha256) is not None:
            return
        if self.folder is None:
            digest = hashlib.sha256()
            sql.insert_blob(session, sha256, size, "db", _rechunk(chunks, digest))
            _check_digest(digest, sha256)
            return
        self._write_file(sha256, chunks)
        sql.insert_blob(session, sha256, size, "dir", ())

    def discard_new(self) -> None:
        """Remove the folder files this store created (ingest failed; its rows rolled back)."""
        for path in self._created:
            path.unlink(missing_ok=True)
        self._created.clear()
        self._known.clear()

    def read(self, session: Session, sha256: str) -> bytes:
        """A blob's bytes; ``BlobMissing`` saying where to look when this machine cannot find them."""
        location = sql.blob_location(session, sha256)
        if location is None:
            raise BlobMissing(f"input file {sha256[:12]}… is not in the store (was its job deleted?)")
        if location == "db":
            return b"".join(sql.blob_chunks(session, sha256))
        if self.folder is None:
            raise BlobMissing(
                f"input file {sha256[:12]}… is in a shared blob folder, and BATCHER_BLOB_DIR is not "
                "set here: set it to the folder the submitting machine used (the same shared mount)"
            )
        try:
            return self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(
                f"input file {sha256[:12]}… is not in {self.folder} on this machine: BATCHER_BLOB_DIR "
                "must be the same shared folder on every machine (is it mounted here?)"
            ) from None

    def path_of(self, sha256: str) -> Path:
        """Where a ``dir`` blob lives in the folder."""
        assert self.folder is not None
        return self.folder / sha256[:2] / sha256

    def _write_file(self, sha256: str, chunks: Iterable[bytes]) -> None:
        target = self.path_of(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{sha256}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        try:
            with part.open("xb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(chunk)
            _check_digest(digest, sha256)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        self._created.append(target)


def _check_digest(digest: Any, sha256: str) -> None:
    if digest.hexdigest() != sha256:
        raise BlobMissing(f"an input file changed while it was stored ({sha256[:12]}…): submit it again")


def _rechunk(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    """The bytes in pieces of exactly ``CHUNK_BYTES`` (the last one shorter), hashed on the way."""
    pending = b""
    for chunk in chunks:
        digest.update(chunk)
        pending += chunk
        while len(pending) >= CHUNK_BYTES:
            yield pending[:CHUNK_BYTES]
            pending = pending[CHUNK_BYTES:]
    if pending:
        yield pending


BlobReader = Callable[[str], bytes]


def blob_reader(store: Store, folder: Path | None) -> BlobReader:
    """Reads blobs by sha256 from ``store`` (and the shared ``folder``): what a worker sends."""
    blobs = BlobStore(folder)

    def read(sha256: str) -> bytes:
        with store.session() as session:
            return blobs.read(session, sha256)

    return read
