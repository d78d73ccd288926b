"""Reading a job's lines for export: keyset pages of what an export writes, with their vectors.

Plain column tuples become ``ResultLine`` records (no ORM objects: an export of ten million lines
must cost little per line), in input order, a page at a time, so memory stays flat. The vector
blocks a page points to are read once per page, and each line gets a view into its block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from jobs.records import ResultLine
from jobs.store.common import REQUEST_TABLE, VECTOR_BLOCK_TABLE
from jobs.vectors import VectorEncoding, Vectors

_req, _block = REQUEST_TABLE, VECTOR_BLOCK_TABLE
_LINE_COLUMNS = tuple(name for name in ResultLine.__dataclass_fields__ if name != "vectors")
_N = len(_LINE_COLUMNS)
_QUERY = (
    sa.select(
        *(_req.c[name] for name in _LINE_COLUMNS),
        _req.c.vector_block,
        _req.c.vector_start,
        _req.c.vector_count,
    )
    .where(_req.c.job_id == sa.bindparam("job_id"), _req.c.line_no > sa.bindparam("after"))
    .order_by(_req.c.line_no)
    .limit(sa.bindparam("chunk"))
)
_Blocks = dict[int, tuple[bytes, int, VectorEncoding]]


def _blocks(conn: sa.Connection, rows: Sequence[Any]) -> _Blocks:
    ids = sorted({row[_N] for row in rows if row[_N] is not None})
    if not ids:
        return {}
    query = sa.select(_block.c.id, _block.c.data, _block.c.dim, _block.c.encoding).where(_block.c.id.in_(ids))
    return {r[0]: (bytes(r[1]), r[2], VectorEncoding(r[3])) for r in conn.execute(query).fetchall()}


def _line(row: Any, blocks: _Blocks) -> ResultLine:
    fields: list[Any] = list(row[:_N])
    block, start, count = row[_N:]
    vectors = None
    if block is not None:
        data, dim, encoding = blocks[block]
        vectors = Vectors(data, dim, encoding, start, start + count)
    return ResultLine(*fields, vectors=vectors)  # type: ignore[misc]  # mypy counts the star as every field


def iter_results(session: Session, job_id: int, *, chunk: int = 1000) -> Iterator[ResultLine]:
    """Every line of the job in input order, with its vectors, fetched in keyset pages."""
    conn = session.connection()
    after = -1
    while True:
        rows = conn.execute(_QUERY, {"job_id": job_id, "after": after, "chunk": chunk}).fetchall()
        if not rows:
            return
        blocks = _blocks(conn, rows)
        yield from (_line(row, blocks) for row in rows)
        after = rows[-1][_LINE_COLUMNS.index("line_no")]
