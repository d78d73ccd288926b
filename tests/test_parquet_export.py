"""Parquet export: one row per line, embeddings as fixed-size float32 lists, readable as is by
pyarrow, pandas and Hugging Face datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batcher.export import ExportFormat, export_job
from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.records import LineResult, Usage


def job_with(store: Store, answers: list[dict[str, object] | None], endpoint: str = "/v1/embeddings") -> int:
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t", source_sha256="x")
        assert job.id is not None
        rows = [
            {
                "job_id": job.id, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": endpoint, "model": "m",
                "body": "{}", "est_tokens": 1, "state": "pending", "attempts": 0, "claims": 0,
                "usage_estimated": False,
            }
            for i in range(len(answers))
        ]  # fmt: skip
        q.insert_requests(s, rows)
        job.total = len(rows)
        q.start_job(s, job.id)
        items = q.claim_lines(s, job_id=job.id, owner="o", lease_seconds=60)
        results = [
            LineResult(
                it.request_id, job.id, "succeeded", 200, orjson.dumps(a).decode(), usage=Usage(3, 0, 3)
            )
            if a is not None
            else LineResult(it.request_id, job.id, "failed", 400, error_code="bad", error_message="no")
            for it, a in zip(items, answers, strict=True)
        ]
        q.record_results(s, results)
        return job.id


def emb(*vectors: list[float]) -> dict[str, object]:
    return {"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        yield store


def test_parquet_has_fixed_size_float32_embeddings_and_opens_everywhere(db: Store, tmp_path: Path) -> None:
    job_id = job_with(db, [emb([0.5, 1.0, -2.0]), None, emb([1.5, 0.0, 0.25])])
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
    job_id = job_with(db, [answer], endpoint="/v1/chat/completions")
    out = tmp_path / "chat.parquet"
    export_job(db, job_id, out, fmt=ExportFormat.PARQUET)
    table = pq.read_table(out)
    assert "embedding" not in table.schema.names
    assert table.column("text").to_pylist() == ["hi there"]
    assert table.column("total_tokens").to_pylist() == [3]


def test_parquet_refuses_lines_with_several_vectors(db: Store, tmp_path: Path) -> None:
    job_id = job_with(db, [emb([1.0]), emb([1.0], [2.0])])
    with pytest.raises(BatcherError, match="--format jsonl"):
        export_job(db, job_id, tmp_path / "x.parquet", fmt=ExportFormat.PARQUET)


def test_parquet_refuses_errors_file(db: Store, tmp_path: Path) -> None:
    job_id = job_with(db, [emb([1.0])])
    with pytest.raises(BatcherError, match="state"):
        export_job(
            db, job_id, tmp_path / "x.parquet", fmt=ExportFormat.PARQUET, errors=tmp_path / "e.parquet"
        )
