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
are written in row groups of about ``ROW_GROUP`` rows or ``ROW_GROUP_BYTES``, so memory stays flat
for millions of lines and any vector size. The file opens in pandas, pyarrow and Hugging Face
``datasets`` as it is.

The export is columnar: the store hands over pages of columns (``jobs.store.iter_result_pages``),
each becomes Arrow arrays whole, and the ``embedding`` column is one float32 buffer copied from the
stored blocks a run of lines at a time (the lines of a packed call sit side by side in one block),
never decoded to Python numbers. Python work per line is left only for lines without vectors
(their ``text``, or vectors kept in the JSON body of lines stored before vectors had a table).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batcher.outfile import atomic_path
from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import BatcherError
from jobs.models import RequestState
from jobs.store import ResultPage
from jobs.vectors import Vectors
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
    ("cached", pa.bool_()),
    ("provider", pa.string()),
    ("error_code", pa.string()),
    ("error", pa.string()),
]


def schema(dim: int | None) -> pa.Schema:
    """The file's columns; ``embedding`` only when the job has embeddings."""
    fields = [pa.field(name, kind) for name, kind in _SCALARS]
    if dim is not None:
        fields.insert(7, pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


class _PageVectors:
    """A page's vectors as columns: ``counts`` rows a line (one for a line without vectors), and
    the float32 buffer of every row copied from the blocks a run of lines at a time."""

    def __init__(self, page: ResultPage, dim: int | None) -> None:
        self.page, self.dim = page, dim
        self.block = _ints(page, "vector_block", missing=-1)  # -1: no block
        self.start = _ints(page, "vector_start")
        count = _ints(page, "vector_count")
        self.legacy = _legacy_vectors(page) if dim is not None else {}
        self._check()
        for i, v in self.legacy.items():
            count[i] = v.count
        self.line_has = self.block >= 0
        self.line_has[list(self.legacy)] = True
        self.counts = np.where(self.line_has, count, 1)
        self.rows = int(self.counts.sum())
        self.multi = self.rows != len(page)
        self.has = np.repeat(self.line_has, self.counts)  # per row: its line has vectors

    def _check(self) -> None:
        if self.dim is None:
            return
        dims = {int(b): self.page.blocks[int(b)][1] for b in np.unique(self.block[self.block >= 0])}
        dims |= {-2 - i: v.dim for i, v in self.legacy.items()}
        for key, found in dims.items():
            if found != self.dim:
                i = -2 - key if key < -1 else int(np.argmax(self.block == key))
                line_no, custom_id = self.page.columns["line_no"][i], self.page.columns["custom_id"][i]
                raise BatcherError(
                    f"line {line_no} ({custom_id}) has a {found}-dimension embedding "
                    f"where the job's first has {self.dim}; export this job with --format jsonl"
                )

    def embedding(self) -> pa.Array:
        """The fixed-size float32 column, each run of lines copied once from its block."""
        assert self.dim is not None
        flat = b"".join(self._pieces(4 * self.dim))
        values = pa.Array.from_buffers(pa.float32(), self.rows * self.dim, [None, pa.py_buffer(flat)])
        return pa.FixedSizeListArray.from_arrays(values, self.dim, mask=pa.array(~self.has))

    def _pieces(self, size: int) -> Iterator[bytes | memoryview]:
        b, s, c = self.block, self.start, self.counts
        # Lines continue a run: the same block, the next vectors in it; or lines without vectors.
        cont = ((b[1:] == b[:-1]) & (s[1:] == s[:-1] + c[:-1])) | ((b[1:] < 0) & (b[:-1] < 0))
        for i in self.legacy:
            cont[max(i - 1, 0) : i + 1] = False
        bounds = [0, *(np.flatnonzero(~cont) + 1).tolist(), len(b)]
        for first, end in itertools.pairwise(bounds):
            if first in self.legacy:
                yield self.legacy[first].raw()
            elif b[first] < 0:
                yield bytes(size * (end - first))
            else:
                data = self.page.blocks[int(b[first])][0]
                yield memoryview(data)[int(s[first]) * size : int(s[end - 1] + c[end - 1]) * size]


def _ints(page: ResultPage, name: str, *, missing: int = 0) -> npt.NDArray[np.int64]:
    array = pa.array(page.columns[name], pa.int64()).fill_null(missing)
    return np.array(array.to_numpy(zero_copy_only=False), dtype=np.int64)


def _legacy_vectors(page: ResultPage) -> dict[int, Vectors]:
    """Vectors kept in a JSON body, by line: lines stored before vectors had a table of their own."""
    found = {}
    for i, body in enumerate(page.columns["response_body"]):
        if body is not None and page.columns["state"][i] == RequestState.SUCCEEDED:
            vectors = family_of(Endpoint(page.columns["endpoint"][i])).vectors(orjson.loads(body))
            if vectors:
                matrix = np.asarray(vectors, dtype=np.float32)
                found[i] = Vectors(matrix.tobytes(), matrix.shape[1])
    return found


def _texts(page: ResultPage, vectors: _PageVectors) -> list[str | None]:
    columns = page.columns
    states, bodies, endpoints = columns["state"], columns["response_body"], columns["endpoint"]
    return [
        None
        if body is None or state != RequestState.SUCCEEDED or has
        else family_of(Endpoint(endpoint)).answer_text(orjson.loads(body))
        for has, state, body, endpoint in zip(vectors.line_has, states, bodies, endpoints, strict=True)
    ]


_FROM_LINE = {"line": "line_no", "error": "last_error"}  # Parquet column: the ResultLine field


def page_table(page: ResultPage, dim: int | None, table_schema: pa.Schema) -> pa.Table:
    """One page of lines as Parquet rows: its columns whole, each line repeated per input."""
    vectors = _PageVectors(page, dim)
    absent = ~vectors.line_has
    computed = {
        "text": _texts(page, vectors),
        "embedding_dim": pa.array(np.full(len(page), dim or 0), pa.int64(), mask=absent),
        "input_index": pa.array(np.zeros(len(page), np.int64), mask=absent),
    }
    arrays = [
        pa.array(
            computed[f.name] if f.name in computed else page.columns[_FROM_LINE.get(f.name, f.name)], f.type
        )
        for f in table_schema
        if f.name != "embedding"
    ]
    names = [f.name for f in table_schema if f.name != "embedding"]
    table = pa.Table.from_arrays(arrays, names=names)
    if vectors.multi:
        table = _per_input(table, vectors)
    if dim is not None:
        table = table.add_column(table_schema.get_field_index("embedding"), "embedding", vectors.embedding())
    return table.cast(table_schema)


def _array(values: Any, kind: pa.DataType) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, kind)


def _per_input(table: pa.Table, vectors: _PageVectors) -> pa.Table:
    """Each line's row repeated once per input: ``input_index`` counts them, tokens stay on the first."""
    counts = vectors.counts
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    table = table.take(pa.array(np.repeat(np.arange(len(counts)), counts)))
    position = np.arange(vectors.rows) - starts
    first = pa.array(position == 0)
    has = pa.array(vectors.has)
    for name in (*_TOKENS, "input_index"):
        values = pa.array(position) if name == "input_index" else table.column(name)
        kept = pc.if_else(has, values, None) if name == "input_index" else pc.if_else(first, values, None)
        table = table.set_column(table.schema.get_field_index(name), name, kept.cast(pa.int64()))
    return table


def first_dimension(store: Store, job_id: int) -> int | None:
    """The dimension of the job's first embedding, or None when it has none."""
    with store.reading() as session:
        for page in q.iter_result_pages(session, job_id):
            dims = [page.blocks[b][1] for b in page.columns["vector_block"] if b is not None]
            dims += [v.dim for v in _legacy_vectors(page).values()]
            if dims:
                return dims[0]
    return None


def export_parquet(store: Store, job_id: int, out: Path) -> int:
    """Write the job's finished lines to a Parquet file, whole or not at all; return how many lines."""
    dim = first_dimension(store, job_id)
    table_schema = schema(dim)
    # Dictionaries and min/max statistics pay off for the text columns; for float noise they only
    # cost time (they halved the write speed of 1536-dimension vectors).
    scalars = [name for name, kind in _SCALARS if kind == pa.string()]
    options: dict[str, Any] = {"use_dictionary": scalars, "write_statistics": [n for n, _ in _SCALARS]}
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, table_schema, **options) as writer:
        group = _RowGroup(writer, table_schema)
        with store.reading() as session:
            for page in q.iter_result_pages(session, job_id):
                group.add(page_table(page, dim, table_schema), lines=len(page))
        group.write(last=True)
    return group.lines


class _RowGroup:
    """Pages' tables held until they make a row group (``ROW_GROUP`` rows or ``ROW_GROUP_BYTES``)."""

    def __init__(self, writer: pq.ParquetWriter, table_schema: pa.Schema) -> None:
        self.writer, self.schema = writer, table_schema
        self.tables: list[pa.Table] = []
        self.rows = self.nbytes = self.lines = 0
        self.written = False

    def add(self, table: pa.Table, *, lines: int) -> None:
        self.tables.append(table)
        self.rows += table.num_rows
        self.nbytes += table.nbytes
        self.lines += lines
        if self.rows >= ROW_GROUP or self.nbytes >= ROW_GROUP_BYTES:
            self.write()

    def write(self, *, last: bool = False) -> None:
        if self.tables or (last and not self.written):
            table = pa.concat_tables(self.tables) if self.tables else self.schema.empty_table()
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self.written = True
        self.tables, self.rows, self.nbytes = [], 0, 0
