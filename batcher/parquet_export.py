"""Parquet export for datasets: one row per input, embeddings as a fixed-size float32 column.

A line whose ``input`` was a list of n texts has n embeddings; it becomes n rows that share its
``custom_id`` and ``line`` and differ in ``input_index`` (0 to n-1). One row per input, rather
than one row per line with a list of vectors, keeps ``embedding`` a plain fixed-size float32
column: it loads as an (inputs × dimension) matrix with no flattening, and each vector joins back
to its input text on (custom_id, input_index). A line without vectors (failed, cancelled, not an
embedding) is one row whose ``input_index`` is null.

The columns are those of the CSV export (``batcher.export.CSV_COLUMNS``) plus ``input_index``
and ``embedding``. Token counts are a line's: they sit on its first row only (null on the rest),
so summing a column gives the job's total; the other line columns repeat on each of its rows.

The embedding column's size is the dimension of the job's first embedding; a later one of
another size is an error (a fixed-size column cannot hold it: export those jobs as JSONL). Rows
are written in row groups of about ``ROW_GROUP`` rows or ``ROW_GROUP_BYTES`` of vectors, so memory
stays flat for millions of lines and any vector size. The
file opens in pandas, pyarrow and Hugging Face ``datasets`` as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batcher.outfile import atomic_path
from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import BatcherError
from jobs.models import RequestState
from jobs.records import ResultLine
from jobs.vectors import Matrix
from workers.endpoints import family_of

ROW_GROUP = 10_000
# A row group is held in memory until written, several times over: cap its vectors (680 rows of
# 1536 floats), which keeps a 1536-dimension export near 250 MB.
ROW_GROUP_BYTES = 4 * 1024 * 1024
_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "characters")
_SCALARS: list[tuple[str, pa.DataType]] = [
    ("custom_id", pa.string()),
    ("line", pa.int64()),
    ("input_index", pa.int64()),
    ("state", pa.string()),
    ("endpoint", pa.string()),
    ("model", pa.string()),
    ("text", pa.string()),
    ("embedding_dim", pa.int64()),
    ("audio_path", pa.string()),
    *((name, pa.int64()) for name in _TOKENS),
    ("usage_estimated", pa.bool_()),
    ("latency_ms", pa.int64()),
    ("attempts", pa.int64()),
    ("error_code", pa.string()),
    ("error", pa.string()),
]


def schema(dim: int | None) -> pa.Schema:
    """The file's columns; ``embedding`` only when the job has embeddings."""
    fields = [pa.field(name, kind) for name, kind in _SCALARS]
    if dim is not None:
        fields.insert(7, pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def line_vectors(line: ResultLine) -> Matrix | None:
    """The succeeded embedding line's vectors, one row per input; None for any other line."""
    if line.vectors is not None:
        return line.vectors.matrix()
    # A line stored before vectors had a table of their own keeps them in its JSON body.
    if line.state != RequestState.SUCCEEDED or not line.response_body:
        return None
    vectors = family_of(Endpoint(line.endpoint)).vectors(orjson.loads(line.response_body))
    return np.asarray(vectors, dtype=np.float32) if vectors else None


def _text(line: ResultLine) -> str | None:
    if line.state != RequestState.SUCCEEDED or not line.response_body or line.vectors is not None:
        return None
    return family_of(Endpoint(line.endpoint)).answer_text(orjson.loads(line.response_body))


class _Batch:
    """Columns of the rows not yet written, and the vectors that go with them."""

    def __init__(self, dim: int | None) -> None:
        self.dim = dim
        self.columns: dict[str, list[Any]] = {name: [] for name, _ in _SCALARS}
        self.vectors: list[Matrix] = []
        self.valid: list[bool] = []
        self.rows = 0
        self.nbytes = 0

    def add(self, line: ResultLine) -> None:
        vectors = line_vectors(line) if self.dim is not None else None
        if vectors is not None:
            self._check(line, vectors)
        n = 1 if vectors is None else len(vectors)
        values = _line_values(line, None if vectors is None else vectors.shape[1])
        for name, value in values.items():
            self.columns[name].append(value)
            if n > 1:
                repeat = None if name in _TOKENS else value
                self.columns[name].extend([repeat] * (n - 1))
        self.columns["input_index"].extend(range(n) if vectors is not None else [None])
        if self.dim is not None:
            self.vectors.append(vectors if vectors is not None else np.zeros((1, self.dim), np.float32))
            self.valid.extend([vectors is not None] * n)
            self.nbytes += 4 * self.dim * n
        self.rows += n

    @property
    def full(self) -> bool:
        """Enough rows, or enough vector bytes, for one row group."""
        return self.rows >= ROW_GROUP or self.nbytes >= ROW_GROUP_BYTES

    def _check(self, line: ResultLine, vectors: Matrix) -> None:
        if vectors.shape[1] != self.dim:
            raise BatcherError(
                f"line {line.line_no} ({line.custom_id}) has a {vectors.shape[1]}-dimension embedding "
                f"where the job's first has {self.dim}; export this job with --format jsonl"
            )

    def table(self, table_schema: pa.Schema) -> pa.Table:
        arrays = [pa.array(self.columns[f.name], type=f.type) for f in table_schema if f.name != "embedding"]
        names = [f.name for f in table_schema if f.name != "embedding"]
        if self.dim is not None:
            flat = pa.array(np.concatenate(self.vectors).reshape(-1) if self.vectors else [], pa.float32())
            mask = pa.array([not v for v in self.valid], pa.bool_())
            embedding = pa.FixedSizeListArray.from_arrays(flat, self.dim, mask=mask)
            arrays.insert(7, embedding)
            names.insert(7, "embedding")
        return pa.Table.from_arrays(arrays, names=names).cast(table_schema)


def _line_values(line: ResultLine, dim: int | None) -> dict[str, Any]:
    return {
        "custom_id": line.custom_id,
        "line": line.line_no,
        "state": line.state,
        "endpoint": line.endpoint,
        "model": line.model,
        "text": _text(line),
        "embedding_dim": dim,
        "audio_path": line.audio_path,
        "prompt_tokens": line.prompt_tokens,
        "completion_tokens": line.completion_tokens,
        "total_tokens": line.total_tokens,
        "characters": line.characters,
        "usage_estimated": bool(line.usage_estimated),
        "latency_ms": line.latency_ms,
        "attempts": line.attempts,
        "error_code": line.error_code,
        "error": line.last_error,
    }


def first_dimension(store: Store, job_id: int) -> int | None:
    """The dimension of the job's first embedding, or None when it has none."""
    with store.session() as session:
        for line in q.iter_results(session, job_id):
            vectors = line_vectors(line)
            if vectors is not None:
                return int(vectors.shape[1])
    return None


def terminal_lines(store: Store, job_id: int) -> Iterator[ResultLine]:
    """The job's finished lines in input order."""
    with store.session() as session:
        for line in q.iter_results(session, job_id):
            if line.state in (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED):
                yield line


def export_parquet(store: Store, job_id: int, out: Path) -> int:
    """Write the job's finished lines to a Parquet file, whole or not at all; return how many lines."""
    dim = first_dimension(store, job_id)
    table_schema = schema(dim)
    lines = 0
    # Dictionaries and min/max statistics pay off for the text columns; for float noise they only
    # cost time (they halved the write speed of 1536-dimension vectors).
    scalars = [name for name, kind in _SCALARS if kind == pa.string()]
    options: dict[str, Any] = {"use_dictionary": scalars, "write_statistics": [n for n, _ in _SCALARS]}
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, table_schema, **options) as writer:
        batch = _Batch(dim)
        for line in terminal_lines(store, job_id):
            batch.add(line)
            lines += 1
            if batch.full:
                writer.write_table(batch.table(table_schema))
                batch = _Batch(dim)
        if batch.rows or not lines:
            writer.write_table(batch.table(table_schema))
    return lines
