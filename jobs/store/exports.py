"""Reading a job's lines for export: keyset pages of what an export writes, with their vectors.

Plain column tuples, in input order, a page at a time, so memory stays flat: either as
``ResultLine`` records (``iter_results``: no ORM objects, an export of ten million lines must cost
little per line) or as the page's columns (``iter_result_pages``: a writer that takes a page whole,
the JSONL and Parquet exports, with only the columns it names). The vector blocks a page points
to are read once, and each line gets a view into its block; a block whose lines straddle two pages
is read once for both.

Rows are read from the driver's own cursor (``bulk.fetch_rows``), not as SQLAlchemy ``Row``
objects; SQLite's booleans come back as 0 and 1 there and are made ``bool`` a column at a time.
A page holds only the columns its writer asks for: on SQLite each value read is a Python object
made (a string copied), and the JSONL export needs 13 of a line's 23.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.records import ResultLine
from jobs.store.bulk import fetch_rows
from jobs.store.common import NOT_TERMINAL, VECTOR_BLOCK_TABLE
from jobs.vectors import VectorEncoding, Vectors

_block = VECTOR_BLOCK_TABLE
LINE_COLUMNS = tuple(name for name in ResultLine.__dataclass_fields__ if name != "vectors")
_VECTOR_COLUMNS = ("vector_block", "vector_start", "vector_count")
_BOOLEANS = frozenset({"usage_estimated", "cached"})
# Past any line number: the upper bound of a page's lines when the caller gives none.
_NO_END = 1 << 62
Block = tuple[bytes, int, VectorEncoding]  # a block's float32 bytes, dimension, encoding


def _page_sql(columns: Sequence[str], *, terminal: bool, bodies: bool) -> str:
    """One keyset page of lines: ``job_id``, after line ``line_no``, before line ``end``, ``chunk`` lines."""
    body = "response_body" if bodies else "CASE WHEN vector_block IS NULL THEN response_body END"
    selected = ", ".join(body if name == "response_body" else name for name in (*columns, *_VECTOR_COLUMNS))
    where = "job_id = ? AND line_no > ? AND line_no < ?"
    if terminal:
        where += f" AND state NOT IN ({', '.join(repr(state) for state in NOT_TERMINAL)})"
    return f"SELECT {selected} FROM request WHERE {where} ORDER BY line_no LIMIT ?"


@dataclass(frozen=True, slots=True)
class ResultPage:
    """A page of lines as columns: ``columns[name]`` holds every line's value of the ``ResultLine``
    fields asked for (``LINE_COLUMNS`` unless fewer; ``response_body`` of lines with vectors only
    when asked for) and of ``vector_block``, ``vector_start``, ``vector_count``; ``blocks`` the
    vector blocks they name."""

    columns: Mapping[str, Sequence[Any]]
    blocks: Mapping[int, Block]

    def __len__(self) -> int:
        return len(self.columns["vector_block"])

    def vectors(self, i: int) -> Vectors | None:
        """Line ``i``'s vectors, if the store holds any for it."""
        block = self.columns["vector_block"][i]
        if block is None:
            return None
        data, dim, encoding = self.blocks[block]
        start = self.columns["vector_start"][i]
        return Vectors(data, dim, encoding, start, start + self.columns["vector_count"][i])


class _Pages:
    """Keyset pages of lines as columns and the vector blocks they point to (the last page's kept)."""

    def __init__(
        self,
        session: Session,
        job_id: int,
        *,
        chunk: int,
        columns: Sequence[str],
        terminal: bool,
        bodies: bool,
    ) -> None:
        self.conn, self.job_id, self.chunk = session.connection(), job_id, chunk
        self.names = (*columns, *_VECTOR_COLUMNS)
        self.sql = _page_sql(columns, terminal=terminal, bodies=bodies)
        self.line_no = self.names.index("line_no")
        self.booleans = [i for i, name in enumerate(self.names) if name in _BOOLEANS]
        self.blocks: dict[int, Block] = {}

    def pages(self, lines: tuple[int, int] | None) -> Iterator[ResultPage]:
        after, end = (lines[0] - 1, lines[1]) if lines else (-1, _NO_END)
        while rows := fetch_rows(self.conn, self.sql, (self.job_id, after, end, self.chunk)):
            columns = list(zip(*rows, strict=True))
            for i in self.booleans:
                columns[i] = tuple(map(bool, columns[i]))
            self._read_blocks(columns[-3])
            yield ResultPage(dict(zip(self.names, columns, strict=True)), self.blocks)
            after = rows[-1][self.line_no]

    def _read_blocks(self, ids: Sequence[int | None]) -> None:
        wanted = set(ids)
        wanted.discard(None)
        kept = {i: self.blocks[i] for i in wanted if i in self.blocks}
        missing = sorted(wanted - kept.keys())  # type: ignore[type-var]
        if missing:
            query = sa.select(_block.c.id, _block.c.data, _block.c.dim, _block.c.encoding)
            for r in self.conn.execute(query.where(_block.c.id.in_(missing))).fetchall():
                kept[r[0]] = (bytes(r[1]), r[2], VectorEncoding(r[3]))
        self.blocks = kept


def iter_results(session: Session, job_id: int, *, chunk: int = 1000) -> Iterator[ResultLine]:
    """Every line of the job in input order, with its vectors, fetched in keyset pages."""
    pages = _Pages(session, job_id, chunk=chunk, columns=LINE_COLUMNS, terminal=False, bodies=True)
    for page in pages.pages(None):
        rows = zip(*(page.columns[name] for name in LINE_COLUMNS), strict=True)
        # mypy counts the star as every field
        yield from (ResultLine(*row, vectors=page.vectors(i)) for i, row in enumerate(rows))  # type: ignore[misc]


def iter_result_pages(
    session: Session,
    job_id: int,
    *,
    chunk: int = 1000,
    columns: Sequence[str] = LINE_COLUMNS,
    bodies: bool = False,
    lines: tuple[int, int] | None = None,
) -> Iterator[ResultPage]:
    """The job's terminal lines (succeeded, failed, cancelled) in input order, a page of columns
    at a time: the ``columns`` named (``line_no`` among them) and the vector columns; the
    ``response_body`` of lines with vectors too when ``bodies``; only lines ``lines[0]`` to
    ``lines[1] - 1`` when given."""
    if "line_no" not in columns:
        raise ValueError("a page's columns must include line_no (its keyset)")
    pages = _Pages(session, job_id, chunk=chunk, columns=columns, terminal=True, bodies=bodies)
    yield from pages.pages(lines)
