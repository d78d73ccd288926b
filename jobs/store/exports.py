"""Reading a job's lines for export: keyset pages of what an export writes, with their vectors.

Plain column tuples, in input order, a page at a time, so memory stays flat: either as
``ResultLine`` records (``iter_results``: no ORM objects, an export of ten million lines must cost
little per line) or as the page's columns (``iter_result_pages``: a columnar writer such as the
Parquet export takes them whole, with no Python work per line). The vector blocks a page points
to are read once, and each line gets a view into its block; a block whose lines straddle two pages
is read once for both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.records import ResultLine
from jobs.store.common import NOT_TERMINAL, REQUEST_TABLE, VECTOR_BLOCK_TABLE
from jobs.vectors import VectorEncoding, Vectors

_req, _block = REQUEST_TABLE, VECTOR_BLOCK_TABLE
LINE_COLUMNS = tuple(name for name in ResultLine.__dataclass_fields__ if name != "vectors")
_N = len(LINE_COLUMNS)
_LINE_NO = LINE_COLUMNS.index("line_no")


def _query(*, terminal: bool) -> sa.Select[Any]:
    body = _req.c.response_body
    if terminal:  # a page's vectors come from their blocks: the body is read only for lines without
        body = sa.case((_req.c.vector_block.is_(None), body), else_=None).label("response_body")
    query = sa.select(
        *(body if name == "response_body" else _req.c[name] for name in LINE_COLUMNS),
        _req.c.vector_block,
        _req.c.vector_start,
        _req.c.vector_count,
    ).where(_req.c.job_id == sa.bindparam("job_id"), _req.c.line_no > sa.bindparam("after"))
    if terminal:
        query = query.where(_req.c.state.not_in(NOT_TERMINAL))
    return query.order_by(_req.c.line_no).limit(sa.bindparam("chunk"))


_QUERIES = {terminal: _query(terminal=terminal) for terminal in (False, True)}
Block = tuple[bytes, int, VectorEncoding]  # a block's float32 bytes, dimension, encoding


@dataclass(frozen=True, slots=True)
class ResultPage:
    """A page of lines as columns: ``columns[name]`` holds every line's value of a ``ResultLine``
    field (``LINE_COLUMNS``; ``response_body`` only for lines without vectors) and of
    ``vector_block``, ``vector_start``, ``vector_count``; ``blocks`` the vector blocks they name."""

    columns: Mapping[str, Sequence[Any]]
    blocks: Mapping[int, Block]

    def __len__(self) -> int:
        return len(self.columns["id"])

    def vectors(self, i: int) -> Vectors | None:
        """Line ``i``'s vectors, if the store holds any for it."""
        block = self.columns["vector_block"][i]
        if block is None:
            return None
        data, dim, encoding = self.blocks[block]
        start = self.columns["vector_start"][i]
        return Vectors(data, dim, encoding, start, start + self.columns["vector_count"][i])


class _Pages:
    """Keyset pages of raw rows and the vector blocks they point to (the last page's kept)."""

    def __init__(self, session: Session, job_id: int, *, chunk: int, terminal: bool) -> None:
        self.conn, self.job_id, self.chunk = session.connection(), job_id, chunk
        self.query = _QUERIES[terminal]
        self.blocks: dict[int, Block] = {}

    def __iter__(self) -> Iterator[Sequence[Any]]:
        after = -1
        while True:
            params = {"job_id": self.job_id, "after": after, "chunk": self.chunk}
            rows = self.conn.execute(self.query, params).fetchall()
            if not rows:
                return
            self._read_blocks(rows)
            yield rows
            after = rows[-1][_LINE_NO]

    def _read_blocks(self, rows: Sequence[Any]) -> None:
        wanted = {row[_N] for row in rows if row[_N] is not None}
        kept = {i: self.blocks[i] for i in wanted if i in self.blocks}
        missing = sorted(wanted - kept.keys())
        if missing:
            query = sa.select(_block.c.id, _block.c.data, _block.c.dim, _block.c.encoding)
            for r in self.conn.execute(query.where(_block.c.id.in_(missing))).fetchall():
                kept[r[0]] = (bytes(r[1]), r[2], VectorEncoding(r[3]))
        self.blocks = kept

    def vectors(self, row: Any) -> Vectors | None:
        block, start, count = row[_N:]
        if block is None:
            return None
        data, dim, encoding = self.blocks[block]
        return Vectors(data, dim, encoding, start, start + count)


def iter_results(session: Session, job_id: int, *, chunk: int = 1000) -> Iterator[ResultLine]:
    """Every line of the job in input order, with its vectors, fetched in keyset pages."""
    pages = _Pages(session, job_id, chunk=chunk, terminal=False)
    for rows in pages:
        # mypy counts the star as every field
        yield from (ResultLine(*row[:_N], vectors=pages.vectors(row)) for row in rows)  # type: ignore[misc]


def iter_result_pages(session: Session, job_id: int, *, chunk: int = 1000) -> Iterator[ResultPage]:
    """The job's terminal lines (succeeded, failed, cancelled) in input order, a page of columns
    at a time."""
    pages = _Pages(session, job_id, chunk=chunk, terminal=True)
    for rows in pages:
        yield ResultPage(dict(zip(_PAGE_COLUMNS, zip(*rows, strict=True), strict=True)), pages.blocks)


_PAGE_COLUMNS = (*LINE_COLUMNS, "vector_block", "vector_start", "vector_count")
