"""Vectors in the store as float32 bytes, read back for export, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np
import pytest

from jobs import store as q
from jobs.db import Store
from jobs.records import LineResult
from jobs.vectors import VectorEncoding, Vectors
from tests.test_store import make_job, ok


def vectors_of(dim: int, count: int, encoding: VectorEncoding, seed: int) -> Vectors:
    rng = np.random.default_rng(seed)
    return Vectors(rng.uniform(-1, 1, (count, dim)).astype("<f4").tobytes(), dim, encoding)


@pytest.mark.parametrize("dim", [1, 8, 1536, 3072])
def test_vectors_round_trip_through_the_store(store: Store, dim: int) -> None:
    job_id = make_job(store, 3)
    written = [
        vectors_of(dim, 1, VectorEncoding.FLOAT, 1),
        vectors_of(dim, 3, VectorEncoding.BASE64, 2),
        None,
    ]
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        results: list[LineResult] = [
            replace(ok(it.request_id, job_id), vectors=v) for it, v in zip(items, written, strict=True)
        ]
        assert q.record_results(s, results) == 3
    with store.session() as s:
        read = [line.vectors for line in q.iter_results(s, job_id, chunk=2)]
    assert [shape(v) for v in read] == [shape(v) for v in written]
    assert read[1] is not None
    encoded = read[1].json_values()
    assert base64.b64decode(encoded[2]) == written[1].data[2 * 4 * dim :]  # type: ignore[union-attr]


def shape(v: Vectors | None) -> tuple[bytes, int, int, str] | None:
    return None if v is None else (v.raw(), v.dim, v.count, v.encoding)


def test_the_lines_of_a_packed_call_share_one_stored_block(store: Store) -> None:
    job_id = make_job(store, 3)
    block = vectors_of(8, 4, VectorEncoding.FLOAT, 5)  # one call: lines of 1, 2 and 1 inputs
    parts = [block.part(0, 1), block.part(1, 3), block.part(3, 4)]
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        results = [replace(ok(it.request_id, job_id), vectors=v) for it, v in zip(items, parts, strict=True)]
        assert q.record_results(s, results) == 3
    with store.session() as s:
        read = [line.vectors for line in q.iter_results(s, job_id)]
        assert s.connection().exec_driver_sql("SELECT count(*) FROM vector_block").scalar() == 1
    assert [shape(v) for v in read] == [shape(v) for v in parts]
    assert [v.matrix().shape for v in read if v is not None] == [(1, 8), (2, 8), (1, 8)]


def test_a_repeated_result_stores_its_vectors_once(store: Store) -> None:
    job_id = make_job(store, 1)
    vectors = vectors_of(4, 1, VectorEncoding.FLOAT, 3)
    with store.session() as s:
        [item] = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        result = replace(ok(item.request_id, job_id), vectors=vectors)
        assert q.record_results(s, [result, result]) == 1
    with store.session() as s:
        assert q.record_results(s, [replace(result, vectors=vectors_of(4, 1, VectorEncoding.FLOAT, 4))]) == 0
        [line] = list(q.iter_results(s, job_id))
    assert shape(line.vectors) == shape(vectors)
    assert line.response_body == '{"ok":true}'


def _three_lines(store: Store) -> int:
    """Lines 0 to 2: vectors, a plain answer, vectors again."""
    job_id = make_job(store, 3)
    written = [vectors_of(4, 1, VectorEncoding.FLOAT, 1), None, vectors_of(4, 2, VectorEncoding.BASE64, 2)]
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        results = [
            replace(ok(it.request_id, job_id), vectors=v) for it, v in zip(items, written, strict=True)
        ]
        assert q.record_results(s, results) == 3
    return job_id


@pytest.mark.parametrize("bodies", [False, True])
def test_a_page_holds_the_columns_asked_for(store: Store, bodies: bool) -> None:
    """Only the columns named, the vector columns beside them; booleans as ``bool`` on every
    backend (SQLite's driver reads 0 and 1); the bodies of lines with vectors only when asked."""
    job_id = _three_lines(store)
    columns = ("line_no", "cached", "usage_estimated", "response_body")
    with store.reading() as s:
        [page] = list(q.iter_result_pages(s, job_id, columns=columns, bodies=bodies))
    assert set(page.columns) == {*columns, "vector_block", "vector_start", "vector_count"}
    assert [type(v) for v in (*page.columns["cached"], *page.columns["usage_estimated"])] == [bool] * 6
    body = '{"ok":true}'
    assert list(page.columns["response_body"]) == ([body] * 3 if bodies else [None, body, None])
    assert [v.count if v else None for v in map(page.vectors, range(3))] == [1, None, 2]


def test_pages_of_a_span_of_lines(store: Store) -> None:
    job_id = _three_lines(store)
    with store.reading() as s:
        pages = list(q.iter_result_pages(s, job_id, columns=("line_no",), lines=(1, 3), chunk=1))
        with pytest.raises(ValueError, match="line_no"):
            next(q.iter_result_pages(s, job_id, columns=("id",)))
    assert [list(p.columns["line_no"]) for p in pages] == [[1], [2]]
