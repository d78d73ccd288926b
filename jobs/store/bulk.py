"""Bulk writes at the driver: SQL written once for both backends, one executemany of plain tuples.

SQLAlchemy's executemany runs every parameter of every row through its type machinery in Python
(a dict per row, a processor per value); for the writes a run makes per line (an attempt, a
result, the vectors) that cost more than the database itself. These statements are plain SQL with
``?`` placeholders (``%s`` on PostgreSQL) and take rows of plain values: ints, strings, booleans,
bytes, and datetimes through ``db_time``, stored exactly as SQLAlchemy stores them, so the ORM
reads them back unchanged.

``insert_rows`` is the fastest insert each backend has, for ingest's million lines: on SQLite one
prepared ``INSERT`` of as many rows as ``SQLITE_MAX_PARAMETERS`` allow (one step for them all), with
the values every row shares written into the SQL; on PostgreSQL ``COPY FROM STDIN``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

import sqlalchemy as sa

# SQLAlchemy's SQLite DATETIME storage format (UTC, no offset: ``UTCDateTime`` adds it back on read).
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def placeholders(conn: sa.Connection, sql: str) -> str:
    """The SQL with ``?`` placeholders in the driver's own style (``ARRAY_PARAM`` ones too)."""
    if conn.dialect.paramstyle == "qmark":
        return sql
    sql = sql.replace("?", "%s")
    return sql if conn.dialect.driver == "psycopg" else sql.replace(ARRAY_PARAM, "%s")


# An array parameter, in PostgreSQL's statements only: psycopg's binary format. In text format
# psycopg quotes each element of a list in Python (a regular expression per string): 256 answer
# bodies took 23 ms, against 0.3 ms in binary (an int list of 256: 1.0 against 0.25 ms).
ARRAY_PARAM = "%b"


def executemany(conn: sa.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row, in one driver call."""
    if rows:
        conn.exec_driver_sql(placeholders(conn, sql), list(rows))


def fetch_rows(conn: sa.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of ``sql`` as the driver's own tuples, read from its cursor: a SQLAlchemy ``Row``
    made for each row of a claim's 2,048 cost 2 µs a line. Errors still surface as SQLAlchemy's
    (the statement runs through ``exec_driver_sql``), so the store's one boundary sees them."""
    result = conn.exec_driver_sql(placeholders(conn, sql), tuple(params))
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def db_time(conn: sa.Connection, value: datetime | None) -> Any:
    """A timezone-aware datetime as the store's DateTime column takes it on this backend."""
    if value is None or conn.dialect.name != "sqlite":
        return value
    return _sqlite_time(value)


@lru_cache(maxsize=64)  # the lines of a packed call share their start time
def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_SQLITE_TIME)


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """``INSERT INTO table (columns) VALUES (?, ...)``."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# SQLite refuses a statement of more than 999 parameters when built with its old default limit
# (32,766 since 3.32); a statement of a hundred rows already steps as fast a row as longer ones.
SQLITE_MAX_PARAMETERS = 999


def insert_rows(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    shared: Mapping[str, int | str | bool] | None = None,
) -> None:
    """Insert rows of ``columns`` values, with ``shared`` values (the same in every row) added."""
    if not rows:
        return
    shared = shared or {}
    driver = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        _sqlite_insert(driver, table, columns, rows, shared)
    elif conn.dialect.driver == "psycopg":
        _copy(driver, table, [*columns, *shared], rows, tuple(shared.values()))
    else:  # another PostgreSQL driver (psycopg2): no COPY of rows
        values = tuple(shared.values())
        executemany(conn, insert_sql(table, [*columns, *shared]), [(*row, *values) for row in rows])


def _sqlite_insert(
    driver: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], shared: Mapping[str, Any]
) -> None:
    per = max(1, SQLITE_MAX_PARAMETERS // len(columns))
    one = f"({', '.join(['?'] * len(columns) + [_sqlite_literal(v) for v in shared.values()])})"
    head = f"INSERT INTO {table} ({', '.join([*columns, *shared])}) VALUES "
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        driver.execute(head + ", ".join([one] * len(part)), list(chain.from_iterable(part)))


def _sqlite_literal(value: int | str | bool) -> str:
    """A shared value as SQL text, stored as a bound parameter would be (a bool as 0 or 1)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))


def _copy(
    driver: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], extra: tuple[Any, ...]
) -> None:
    with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((*row, *extra))


def lines_of_job(conn: sa.Connection, job_id: int, request_ids: Sequence[int]) -> list[int]:
    """Those of ``request_ids`` that are ``job_id``'s lines, found by primary key alone.

    A message's few thousand ids are looked up by ``id`` and their job checked on the rows found:
    a condition on ``job_id`` beside them lets PostgreSQL take the (job, state) index instead,
    which, with no statistics after a bulk copy, it believes holds a couple of dozen rows, and
    then walks a million-line job's pending lines for every message (about a second each).
    """
    if not request_ids:
        return []
    where, params = ids_where(conn, request_ids)
    rows = fetch_rows(conn, f"SELECT id, job_id FROM request WHERE {where}", params)
    return [row[0] for row in rows if row[1] == job_id]


def ids_where(conn: sa.Connection, ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    """A condition on ``id`` for these ids, with their range first, and its parameters.

    ``id IN (...)`` of a few thousand ids alone, on a table PostgreSQL has no statistics for (just
    bulk-copied), is planned as a scan of the whole table (40 ms at 300,000 lines); the range
    beside it makes it a primary-key range scan (3 ms). A message's or a claim's ids are close
    together, so the range holds few others.

    On PostgreSQL the ids are one array parameter (``id = ANY(?)``), so the statement's text and
    its number of parameters do not depend on how many ids there are: psycopg rewrites a
    statement's placeholders in Python and keeps the rewrite only for statements of at most 50
    parameters, and a claim's 4,096 placeholders were rewritten at every execution. SQLite keeps
    its list of placeholders.
    """
    if conn.dialect.name == "postgresql":
        return f"id BETWEEN ? AND ? AND id = ANY({ID_ARRAY})", (min(ids), max(ids), list(ids))
    return f"id BETWEEN ? AND ? AND id IN ({', '.join('?' * len(ids))})", (min(ids), max(ids), *ids)


ID_ARRAY = f"CAST({ARRAY_PARAM} AS BIGINT[])"  # psycopg sends an int list as smallint[] to bigint[]


def id_in(conn: sa.Connection, column: sa.ColumnElement[int], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``column`` among ``ids`` with their range beside it, for SQLAlchemy statements: one array
    parameter on PostgreSQL, an expanding ``IN`` elsewhere (see ``ids_where``)."""
    in_range = column.between(min(ids), max(ids))
    if conn.dialect.name == "postgresql":
        return sa.and_(in_range, column == sa.any_(sa.bindparam(None, list(ids), type_=_ID_ARRAY_TYPE)))
    return sa.and_(in_range, column.in_(list(ids)))


_ID_ARRAY_TYPE = sa.ARRAY(sa.BigInteger)
