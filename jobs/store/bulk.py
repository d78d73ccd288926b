"""Bulk writes at the driver: SQL written once for both backends, one executemany of plain tuples.

SQLAlchemy's executemany runs every parameter of every row through its type machinery in Python
(a dict per row, a processor per value); for the writes a run makes per line (an attempt, a
result, the vectors) that cost more than the database itself. These statements are plain SQL with
``?`` placeholders (``%s`` on PostgreSQL) and take rows of plain values: ints, strings, booleans,
bytes, and datetimes through ``db_time``, stored exactly as SQLAlchemy stores them, so the ORM
reads them back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

# SQLAlchemy's SQLite DATETIME storage format (UTC, no offset: ``UTCDateTime`` adds it back on read).
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def placeholders(conn: sa.Connection, sql: str) -> str:
    """The SQL with ``?`` placeholders in the driver's own style."""
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


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
