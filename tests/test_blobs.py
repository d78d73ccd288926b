"""The blob store: content-addressed, deduplicated, chunked in SQL or kept in a shared folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.blobs import CHUNK_BYTES, BlobStore, StoredFile, blob_reader, stored_files
from jobs.db import Store
from jobs.errors import BlobMissing
from jobs.models import Blob, BlobChunk
from jobs.store.blobs import link_blobs, unlink_jobs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count(store: Store, table: type[Blob] | type[BlobChunk]) -> int:
    with store.session() as s:
        return int(s.connection().execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_blob_is_stored_in_chunks_once_and_read_back(store: Store) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two full chunks and a bit
    with store.session() as s:
        blobs = BlobStore()
        blobs.put(s, sha(data), len(data), iter([data[:1000], data[1000:]]))
        blobs.put(s, sha(data), len(data), iter([data]))  # the same bytes again: nothing new
    with store.session() as s:
        BlobStore().put(s, sha(data), len(data), iter([data]))  # and in another session
    assert count(store, Blob) == 1
    assert count(store, BlobChunk) == 3
    assert blob_reader(store, None)(sha(data)) == data


def test_bytes_that_do_not_match_their_sha256_are_refused(store: Store) -> None:
    with pytest.raises(BlobMissing, match="changed while it was stored"), store.session() as s:
        BlobStore().put(s, sha(b"one"), 3, iter([b"two"]))
    assert count(store, Blob) == 0


def test_a_shared_folder_holds_the_bytes_and_the_store_says_where(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "blobs"
    with store.session() as s:
        BlobStore(folder).put(s, sha(b"audio"), 5, iter([b"au", b"dio"]))
    assert (folder / sha(b"audio")[:2] / sha(b"audio")).read_bytes() == b"audio"
    assert count(store, BlobChunk) == 0
    assert blob_reader(store, folder)(sha(b"audio")) == b"audio"
    with pytest.raises(BlobMissing, match="BATCHER_BLOB_DIR is not set here"):
        blob_reader(store, None)(sha(b"audio"))
    with pytest.raises(BlobMissing, match="is it mounted here"):
        blob_reader(store, tmp_path / "elsewhere")(sha(b"audio"))


def test_discard_new_removes_the_folder_files_of_a_failed_ingest(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "blobs"
    blobs = BlobStore(folder)
    with pytest.raises(RuntimeError), store.session() as s:
        blobs.put(s, sha(b"x"), 1, iter([b"x"]))
        raise RuntimeError("ingest failed")
    blobs.discard_new()
    assert not (folder / sha(b"x")[:2] / sha(b"x")).exists()
    assert count(store, Blob) == 0


def test_unknown_blob_says_so(store: Store) -> None:
    with pytest.raises(BlobMissing, match="not in the store"):
        blob_reader(store, None)("0" * 64)


def test_a_blob_goes_with_the_last_job_that_uses_it(store: Store) -> None:
    with store.session() as s:
        BlobStore().put(s, sha(b"a"), 1, iter([b"a"]))
        BlobStore().put(s, sha(b"b"), 1, iter([b"b"]))
        link_blobs(s, 1, [sha(b"a"), sha(b"b")])
        link_blobs(s, 2, [sha(b"a")])
    with store.session() as s:
        assert unlink_jobs(s, [1]) == []
    assert count(store, Blob) == 1
    with store.session() as s:
        unlink_jobs(s, [2])
    assert count(store, Blob) == count(store, BlobChunk) == 0


def test_stored_file_reference_round_trips() -> None:
    ref = StoredFile("ab" * 32, "clip.wav", 10, 2.5)
    assert StoredFile.from_json(ref.as_json()) == ref
    assert stored_files([ref.as_json(), "not a ref"]) == [ref]
    assert StoredFile.from_json("clip.wav") is None
