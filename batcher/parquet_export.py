"""Parquet export for datasets: one row per line, embeddings as fixed-size float32 lists.

Rows are written in row groups of ``ROW_GROUP`` lines, so memory stays flat for millions of
lines. The embedding column's size is the dimension of the job's first embedding; a later one of
another size is an error (a fixed-size column cannot hold it: export those jobs as JSONL). A line
whose input was a list gets several vectors, which one row cannot hold either: the export says so.
The file opens in pandas, pyarrow and Hugging Face ``datasets`` as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.models import Request, RequestState

ROW_GROUP = 10_000
_SCALARS: list[tuple[str, pa.DataType]] = [
    ("custom_id", pa.string()),
    ("line", pa.int64()),
    ("state", pa.string()),
    ("endpoint", pa.string()),
    ("model", pa.string()),
    ("text", pa.string()),
    ("audio_path", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("total_tokens", pa.int64()),
    ("characters", pa.int64()),
    ("latency_ms", pa.int64()),
    ("error_code", pa.string()),
    ("error", pa.string()),
]


def schema(dim: int | None) -> pa.Schema:
    """The file's columns; ``embedding`` only when the job has embeddings."""
    fields = [pa.field(name, kind) for name, kind in _SCALARS]
    if dim is not None:
        fields.insert(5, pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def _vectors(line: Request) -> list[list[float]]:
    if line.state != RequestState.SUCCEEDED or not line.response_body or line.endpoint != "/v1/embeddings":
        return []
    data = orjson.loads(line.response_body).get("data") or []
    return [d["embedding"] for d in data if isinstance(d, dict) and "embedding" in d]


def _text(line: Request) -> str | None:
    if line.state != RequestState.SUCCEEDED or not line.response_body or line.endpoint == "/v1/embeddings":
        return None
    choices = orjson.loads(line.response_body).get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    return str(message.get("content") or "") if isinstance(message, dict) else first.get("text")


def _row(line: Request, dim: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "custom_id": line.custom_id,
        "line": line.line_no,
        "state": line.state,
        "endpoint": line.endpoint,
        "model": line.model,
        "text": _text(line),
        "audio_path": line.audio_path,
        "prompt_tokens": line.prompt_tokens,
        "completion_tokens": line.completion_tokens,
        "total_tokens": line.total_tokens,
        "characters": line.characters,
        "latency_ms": line.latency_ms,
        "error_code": line.error_code,
        "error": line.last_error,
    }
    if dim is not None:
        row["embedding"] = _one_vector(line, dim)
    return row


def _one_vector(line: Request, dim: int) -> list[float] | None:
    vectors = _vectors(line)
    if not vectors:
        return None
    if len(vectors) > 1:
        raise BatcherError(
            f"line {line.line_no} ({line.custom_id}) has {len(vectors)} embeddings and a Parquet row holds "
            "one; export this job with --format jsonl, or give each input its own line"
        )
    if len(vectors[0]) != dim:
        raise BatcherError(
            f"line {line.line_no} ({line.custom_id}) has a {len(vectors[0])}-dimension embedding where "
            f"the job's first has {dim}; export this job with --format jsonl"
        )
    return vectors[0]


def first_dimension(store: Store, job_id: int) -> int | None:
    """The dimension of the job's first embedding, or None when it has none."""
    with store.session() as session:
        for line in q.iter_lines(session, job_id):
            vectors = _vectors(line)
            if vectors:
                return len(vectors[0])
    return None


def terminal_lines(store: Store, job_id: int) -> Iterator[Request]:
    """The job's finished lines in input order."""
    with store.session() as session:
        for line in q.iter_lines(session, job_id):
            if line.state in (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED):
                yield line


def export_parquet(store: Store, job_id: int, out: Path) -> int:
    """Write the job's finished lines to a Parquet file; return how many rows."""
    dim = first_dimension(store, job_id)
    table_schema = schema(dim)
    rows: list[dict[str, Any]] = []
    written = 0
    with pq.ParquetWriter(out, table_schema) as writer:
        for line in terminal_lines(store, job_id):
            rows.append(_row(line, dim))
            if len(rows) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, schema=table_schema))
                written, rows = written + len(rows), []
        if rows or not written:
            writer.write_table(pa.Table.from_pylist(rows, schema=table_schema))
    return written + len(rows)
