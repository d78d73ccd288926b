"""Parquet export: one row per input, embeddings as fixed-size float32 lists, readable as is by
pyarrow, pandas and Hugging Face datasets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batcher.export import CSV_COLUMNS, ExportFormat, export_job
from batcher.parquet_export import page_table, schema
from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.records import LineResult
from jobs.vectors import VectorEncoding, Vectors
from tests.helpers import emb, finished_job
from tests.test_store import make_job, ok


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        yield store


@pytest.mark.parametrize("vectors_apart", [True, False], ids=["vector-table", "stored-before-it"])
def test_parquet_has_fixed_size_float32_embeddings_and_opens_everywhere(
    db: Store, tmp_path: Path, vectors_apart: bool
) -> None:
    answers = [emb([0.5, 1.0, -2.0]), None, emb([1.5, 0.0, 0.25])]
    job_id = finished_job(db, answers, vectors_apart=vectors_apart)
    out = tmp_path / "out.parquet"
    summary = export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    assert summary.written == 3
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 3)
    assert table.column("custom_id").to_pylist() == ["c0", "c1", "c2"]
    assert table.column("embedding").to_pylist() == [[0.5, 1.0, -2.0], None, [1.5, 0.0, 0.25]]
    assert table.column("state").to_pylist() == ["succeeded", "failed", "succeeded"]
    assert table.column("error").to_pylist() == [None, "no", None]

    import pandas as pd

    frame = pd.read_parquet(out)
    assert list(frame["custom_id"]) == ["c0", "c1", "c2"]
    assert list(frame["embedding"][0]) == [0.5, 1.0, -2.0]

    from datasets import Dataset

    dataset = Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.num_rows == 3
    assert dataset[2]["embedding"] == [1.5, 0.0, 0.25]


def test_parquet_for_chat_has_text_and_no_embedding_column(db: Store, tmp_path: Path) -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}}]}
    job_id = finished_job(db, [answer], endpoint="/v1/chat/completions")
    out = tmp_path / "chat.parquet"
    export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    table = pq.read_table(out)
    assert "embedding" not in table.schema.names
    assert table.column("text").to_pylist() == ["hi there"]
    assert table.column("total_tokens").to_pylist() == [3]


def test_parquet_has_one_row_per_input_of_multi_input_lines(db: Store, tmp_path: Path) -> None:
    job_id = finished_job(db, [emb([1.0, 2.0]), emb([3.0, 4.0], [5.0, 6.0], [7.0, 8.0]), None])
    out = tmp_path / "multi.parquet"
    summary = export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    assert summary.written == 3  # lines
    table = pq.read_table(out)
    assert table.column("custom_id").to_pylist() == ["c0", "c1", "c1", "c1", "c2"]
    assert table.column("line").to_pylist() == [1, 2, 2, 2, 3]
    assert table.column("input_index").to_pylist() == [0, 0, 1, 2, None]
    assert table.column("embedding").to_pylist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], None]
    # A line's tokens sit on its first row only, so a column's sum is the job's total.
    assert table.column("prompt_tokens").to_pylist() == [3, 3, None, None, None]
    assert table.column("state").to_pylist() == ["succeeded"] * 4 + ["failed"]


def test_parquet_has_every_csv_column(db: Store, tmp_path: Path) -> None:
    job_id = finished_job(db, [emb([1.0, 2.0])])
    out = tmp_path / "cols.parquet"
    export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    table = pq.read_table(out)
    assert set(CSV_COLUMNS) <= set(table.schema.names)
    assert table.column("usage_estimated").to_pylist() == [False]
    assert table.column("attempts").to_pylist() == [0]
    assert table.column("embedding_dim").to_pylist() == [2]


def test_parquet_that_fails_leaves_no_file_and_keeps_an_old_one(db: Store, tmp_path: Path) -> None:
    job_id = finished_job(db, [emb([1.0, 2.0]), emb([1.0, 2.0, 3.0])])
    out = tmp_path / "x.parquet"
    with pytest.raises(BatcherError, match="--format jsonl"):
        export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    assert list(tmp_path.glob("*.parquet*")) == []
    out.write_bytes(b"an earlier export")
    with pytest.raises(BatcherError):
        export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir() if "x.parquet" in p.name) == ["x.parquet"]


def test_parquet_refuses_errors_file(db: Store, tmp_path: Path) -> None:
    job_id = finished_job(db, [emb([1.0])])
    with pytest.raises(BatcherError, match="state"):
        export_job(
            db, job_id, tmp_path / "x.parquet", fmt=ExportFormat.PARQUET, errors=tmp_path / "e.parquet"
        )


def test_parquet_pages_copy_packed_blocks_by_runs_of_lines(db: Store) -> None:
    """Lines of packed calls share blocks; runs break at a failed line, a new block and a page end."""
    rng = np.random.default_rng(7)
    first = Vectors(rng.uniform(-1, 1, (4, 3)).astype("<f4").tobytes(), 3, VectorEncoding.FLOAT)
    second = Vectors(rng.uniform(-1, 1, (2, 3)).astype("<f4").tobytes(), 3, VectorEncoding.FLOAT)
    parts: list[Vectors | None] = [first.part(0, 1), None, first.part(1, 3), first.part(3, 4), second]
    job_id = make_job(db, len(parts))
    with db.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        results = [
            replace(ok(it.request_id, job_id), vectors=v)
            if v is not None
            else LineResult(it.request_id, job_id, "failed", 400, error_code="bad", error_message="no")
            for it, v in zip(items, parts, strict=True)
        ]
        q.record_results(s, results)
    with db.session() as s:
        tables = [page_table(page, 3, schema(3)) for page in q.iter_result_pages(s, job_id, chunk=2)]
    table = pa.concat_tables(tables)
    expected = [first.matrix()[0], None, *first.matrix()[1:3], first.matrix()[3], *second.matrix()]
    got = table.column("embedding").to_pylist()
    assert [None if e is None else e.tolist() for e in expected] == got
    assert table.column("custom_id").to_pylist() == ["c1", "c2", "c3", "c3", "c4", "c5", "c5"]
    assert table.column("input_index").to_pylist() == [0, None, 0, 1, 0, 0, 1]
    assert table.column("embedding_dim").to_pylist() == [3, None, 3, 3, 3, 3, 3]
