"""The result rows of a flush: each line's terminal columns, written one statement per call.

The lines one packed call answered share all but a few of their result columns (state, status,
upstream request id, latency, provider, vector block, finish time...): only the body, the
usage split (prompt and total tokens), the vectors' place in the block and the attempt count are
a line's own. Results are grouped by what they share; a group of at least ``GROUP_MIN`` lines is
one ``UPDATE ... FROM`` a ``VALUES`` list of the lines' own columns, the shared ones bound once.
A smaller group (a line called alone, a cached answer) goes in one executemany of whole rows.
Binding the thirty columns of every row one by one was half the cost of a packed line's write
(7.6 vs 4.0 µs a line, SQLite, writes and commit of 1,024 lines). Both statements change a line
only while it is not terminal.

``UPDATE ... FROM`` is SQLite's since 3.33 and PostgreSQL's; the ``VALUES`` columns are cast to
their column's type, since PostgreSQL types a column of NULL parameters as text. On PostgreSQL the
lines' own columns are instead one array parameter each, read back as rows by ``unnest``: the
statement then has the same text and 30 parameters for any number of lines, and psycopg, which
rewrites a statement's placeholders in Python and keeps the rewrite only for statements of at most
50 parameters, no longer rewrites 1,792 of them at every group (``jobs.store.bulk.ids_where``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from jobs.records import LineResult, Usage
from jobs.store.bulk import ARRAY_PARAM, executemany, placeholders

GROUP_MIN = 8  # smaller groups cost less as executemany rows than as a statement of their own
ROWS_A_STATEMENT = 256  # 7 parameters a row: well under every backend's limit of bound parameters

USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "characters",
    "seconds",
    "images",
    "calls",
    "usage_estimated",
)


def usage_values(usage: Usage | None) -> tuple[Any, ...]:
    """A usage as the values of ``USAGE_COLUMNS`` (attempt rows take them too)."""
    if usage is None:
        return (None,) * (len(USAGE_COLUMNS) - 1) + (False,)
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        *_usage_rest(usage),
    )


def _usage_rest(usage: Usage) -> tuple[Any, ...]:
    """The usage columns after ``total_tokens``."""
    return (
        usage.cached_tokens,
        usage.reasoning_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        usage.characters,
        float(usage.seconds) if usage.seconds else None,
        usage.images or None,
        float(usage.calls) if usage.calls else None,
        usage.estimated,
    )


_SHARED_COLUMNS = (
    "state",
    "status_code",
    "audio_path",
    "audio_bytes",
    "audio_format",
    "upstream_request_id",
    "completion_tokens",
    *USAGE_COLUMNS[3:],
    "latency_ms",
    "error_code",
    "last_error",
    "cached",
    "provider",
    "vector_block",
    "finished_at",
)
# A line's own columns, with their type for the cast; then its attempt count and id.
_OWN_COLUMNS = (
    ("response_body", "TEXT"),
    ("prompt_tokens", "INTEGER"),
    ("total_tokens", "INTEGER"),
    ("vector_start", "INTEGER"),
    ("vector_count", "INTEGER"),
)
_NOT_TERMINAL = "state IN ('pending', 'running')"
_RELEASE = "lease_owner = NULL, lease_expires_at = NULL"

_ROW_UPDATE = (
    f"UPDATE request SET {', '.join(f'{c} = ?' for c in (*_SHARED_COLUMNS, *(c for c, _ in _OWN_COLUMNS)))}, "
    f"{_RELEASE}, attempts = CASE WHEN attempts < ? THEN ? ELSE attempts END "
    f"WHERE id = ? AND {_NOT_TERMINAL}"
)
_V = ("line_id", "line_attempts", *(f"v_{c}" for c, _ in _OWN_COLUMNS))
_GROUP_UPDATE = (
    f"WITH v({', '.join(_V)}) AS ({{rows}}) "
    f"UPDATE request SET {', '.join(f'{c} = ?' for c in _SHARED_COLUMNS)}, "
    f"{', '.join(f'{c} = CAST(v.v_{c} AS {t})' for c, t in _OWN_COLUMNS)}, {_RELEASE}, "
    "attempts = CASE WHEN request.attempts < v.line_attempts THEN v.line_attempts ELSE request.attempts END "
    f"FROM v WHERE request.id = v.line_id AND request.{_NOT_TERMINAL}"
)
_VALUES_ROW = f"({', '.join('?' * len(_V))})"
_V_TYPES = ("BIGINT", "INTEGER", *(t for _, t in _OWN_COLUMNS))
_PG_GROUP_UPDATE = _GROUP_UPDATE.format(
    rows=f"SELECT * FROM unnest({', '.join(f'CAST({ARRAY_PARAM} AS {t}[])' for t in _V_TYPES)})"
)

Shared = tuple[Any, ...]
Own = tuple[Any, ...]  # line id, attempts, then the ``_OWN_COLUMNS``


def write_results(
    conn: sa.Connection,
    results: Iterable[LineResult],
    *,
    blocks: dict[int, int],
    finished: Any,
    attempts: dict[int, int],
) -> None:
    """Write these results (not yet terminal) with their vector block ids, finish time and
    attempt counts (line id: attempts; 0 when the flush has none for a line)."""
    groups: dict[Shared, list[Own]] = {}
    for r in results:
        shared, own = _split(r, blocks, finished, attempts.get(r.request_id, 0))
        groups.setdefault(shared, []).append(own)
    rows: list[tuple[Any, ...]] = []
    for shared, owns in groups.items():
        if len(owns) < GROUP_MIN:
            rows += [(*shared, *own[2:], own[1], own[1], own[0]) for own in owns]
            continue
        for start in range(0, len(owns), ROWS_A_STATEMENT):
            _group_update(conn, shared, owns[start : start + ROWS_A_STATEMENT])
    executemany(conn, _ROW_UPDATE, rows)


def _group_update(conn: sa.Connection, shared: Shared, owns: list[Own]) -> None:
    if conn.dialect.name == "postgresql":
        sql, params = _PG_GROUP_UPDATE, [list(column) for column in zip(*owns, strict=True)]
    else:
        sql = _GROUP_UPDATE.format(rows="VALUES " + ", ".join([_VALUES_ROW] * len(owns)))
        params = [value for own in owns for value in own]
    conn.exec_driver_sql(placeholders(conn, sql), (*params, *shared))


def _split(r: LineResult, blocks: dict[int, int], finished: Any, attempts: int) -> tuple[Shared, Own]:
    """A result's columns: those a call's lines share, and the line's own."""
    u, v = r.usage, r.vectors
    if u is None:
        completion, rest, prompt, total = None, (None,) * (len(USAGE_COLUMNS) - 4) + (False,), None, None
    else:
        completion, rest, prompt, total = u.completion_tokens, _usage_rest(u), u.prompt_tokens, u.total_tokens
    block, start, count = (None, None, None) if v is None else (blocks[id(v.data)], v.start, v.count)
    shared = (
        r.state,
        r.status_code,
        r.audio_path,
        r.audio_bytes,
        r.audio_format,
        r.upstream_request_id,
        completion,
        *rest,
        r.latency_ms,
        r.error_code,
        r.error_message,
        r.cached,
        r.provider,
        block,
        finished,
    )
    return shared, (r.request_id, attempts, r.response_body, prompt, total, start, count)
