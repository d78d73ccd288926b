"""The response cache's rows: keys of answered requests, found again, counted and cleared.

``workers.cache`` decides which requests have a key and what it is; this module only stores. A
key points at the succeeded line whose answer it reuses (``CachedAnswer``): keeping an answer
costs one small row, and only a line answered from it gets a copy (its own body and vectors).
A key is written in the same transaction as the result it points at (``save_answers``, called by
``jobs.store.results``), so a kill never leaves one without the other; two workers keeping one key
at once keep the first (``ON CONFLICT DO NOTHING``). Deleting a job drops the keys of its lines
(``jobs.store.cleanup``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.models import CachedAnswer, RequestState, utcnow
from jobs.records import LineResult, Usage
from jobs.store.bulk import db_time, executemany, fetch_rows, insert_sql
from jobs.store.common import REQUEST_TABLE, VECTOR_BLOCK_TABLE
from jobs.vectors import VectorEncoding, Vectors

CACHE_TABLE: Any = CachedAnswer.__table__  # type: ignore[attr-defined]
_cache, _req, _block = CACHE_TABLE, REQUEST_TABLE, VECTOR_BLOCK_TABLE
_USAGE = (
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "characters",
)  # fmt: skip
_INSERT = (
    insert_sql("response_cache", ("key", "request_id", "hits", "created_at"))
    + " ON CONFLICT (key) DO NOTHING"
)
_HIT = "UPDATE response_cache SET hits = hits + ?, last_hit_at = ? WHERE key = ?"
LOOKUP_BATCH = 500  # keys per query: well under every driver's limit of bound parameters
_LOOKED_UP = ("status_code", "response_body", "upstream_request_id", *_USAGE, "usage_estimated",
              "vector_block", "vector_start", "vector_count")  # fmt: skip
# Plain SQL at the driver (``jobs.store.bulk``): every claim of a cached job looks its lines up,
# and SQLAlchemy compiling an expanding IN of 500 keys cost more than the lookup (mostly misses).
_LOOKUP_SQL = (
    f"SELECT response_cache.key, {', '.join('request.' + n for n in _LOOKED_UP)} FROM response_cache "
    "JOIN request ON request.id = response_cache.request_id WHERE response_cache.key IN ({keys}) "
    "AND request.state = ?"
)


@dataclass(frozen=True, slots=True)
class Kept:
    """A cached answer as a line's result takes it."""

    status_code: int
    response_body: str | None
    upstream_request_id: str | None
    usage: Usage
    vectors: Vectors | None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds and what it has saved so far."""

    entries: int
    hits: int
    saved_tokens: int
    oldest: datetime | None
    newest: datetime | None


@dataclass(frozen=True, slots=True)
class CachedLines:
    """A model's lines answered from the cache in some jobs, with the usage they did not pay for."""

    model: str
    lines: int
    usage: Usage


def save_answers(conn: sa.Connection, results: Iterable[LineResult]) -> None:
    """Keep a key for each fresh succeeded result that has one (the first line of a key stays)."""
    now = db_time(conn, utcnow())
    rows = [
        (r.cache_key, r.request_id, 0, now)
        for r in results
        if r.cache_key is not None and r.state == RequestState.SUCCEEDED and not r.cached
    ]
    executemany(conn, _INSERT, rows)


def _usage(values: Sequence[Any], *, estimated: bool = False) -> Usage:
    p, c, t, cached, reasoning, chars = (int(v or 0) for v in values)
    return Usage(p, c, t, chars, estimated, cached_tokens=cached, reasoning_tokens=reasoning)


def _blocks(conn: sa.Connection, ids: set[int]) -> dict[int, tuple[bytes, int, VectorEncoding]]:
    if not ids:
        return {}
    query = sa.select(_block.c.id, _block.c.data, _block.c.dim, _block.c.encoding).where(
        _block.c.id.in_(sorted(ids))
    )
    return {r[0]: (bytes(r[1]), r[2], VectorEncoding(r[3])) for r in conn.execute(query)}


def _kept(row: Any, blocks: dict[int, tuple[bytes, int, VectorEncoding]]) -> Kept:
    n = len(_USAGE)
    status, body, rid = row[1:4]
    usage = _usage(row[4 : 4 + n], estimated=bool(row[4 + n]))
    block, start, count = row[5 + n : 8 + n]
    vectors = None
    if block is not None:
        data, dim, encoding = blocks[block]
        own = Vectors(data, dim, encoding, start, start + count).raw()  # its own copy, not the pack's
        vectors = Vectors(own, dim, encoding)
    return Kept(status, body, rid, usage, vectors)


def cached_answers(session: Session, keys: Iterable[str]) -> dict[str, Kept]:
    """The answers kept under these keys (those the cache has, whose line is still succeeded)."""
    wanted, found = sorted(set(keys)), dict[str, Kept]()
    conn = session.connection()
    for start in range(0, len(wanted), LOOKUP_BATCH):
        part = wanted[start : start + LOOKUP_BATCH]
        sql = _LOOKUP_SQL.format(keys=", ".join("?" * len(part)))
        rows = fetch_rows(conn, sql, (*part, RequestState.SUCCEEDED.value))
        blocks = _blocks(conn, {row[-3] for row in rows if row[-3] is not None})
        found.update((row[0], _kept(row, blocks)) for row in rows)
    return found


def note_hits(session: Session, keys: Sequence[str]) -> None:
    """Count the hits of these keys (a key once per line it answered)."""
    conn = session.connection()
    now = db_time(conn, utcnow())
    executemany(conn, _HIT, [(n, now, key) for key, n in Counter(keys).items()])


def cache_stats(session: Session) -> CacheStats:
    """Keys kept, their hits, the tokens those hits did not pay for, and the keys' ages."""
    query = sa.select(
        func.count(),
        func.coalesce(func.sum(_cache.c.hits), 0),
        func.coalesce(func.sum(_cache.c.hits * func.coalesce(_req.c.total_tokens, 0)), 0),
        func.min(_cache.c.created_at),
        func.max(_cache.c.created_at),
    ).select_from(_cache.outerjoin(_req, _req.c.id == _cache.c.request_id))
    entries, hits, tokens, oldest, newest = session.connection().execute(query).one()
    return CacheStats(int(entries), int(hits), int(tokens), oldest, newest)


def clear_cache(session: Session, *, before: datetime | None = None) -> int:
    """Forget the kept keys (those kept before ``before``, when given); jobs' results stay."""
    stmt = sa.delete(_cache)
    if before is not None:
        stmt = stmt.where(_cache.c.created_at < before)
    return int(session.connection().execute(stmt).rowcount or 0)


def forget_lines(session: Session, lines: Any) -> None:
    """Drop the keys that point at these lines (a select of request ids): their job is deleted."""
    session.connection().execute(sa.delete(_cache).where(_cache.c.request_id.in_(lines)))


def cached_lines(session: Session, job_ids: Sequence[int] | None) -> list[CachedLines]:
    """Per model, the lines of these jobs (all jobs: None) answered from the cache, and their usage."""
    s = func.coalesce
    query = sa.select(_req.c.model, func.count(), *(s(func.sum(_req.c[n]), 0) for n in _USAGE)).where(
        sa.text("request.cached"),  # the condition of the partial index ix_request_cached, as it is
        _req.c.state == RequestState.SUCCEEDED.value,
    )
    if job_ids is not None:
        query = query.where(_req.c.job_id.in_(list(job_ids)))
    rows = session.connection().execute(query.group_by(_req.c.model).order_by(_req.c.model))
    return [CachedLines(str(model), int(n), _usage(sums)) for model, n, *sums in rows]
