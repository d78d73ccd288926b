"""Connections to the SQL store: engine set-up per backend, sessions, and error translation.

Only SQLite and PostgreSQL are stores; any other URL is a ``ConfigError`` before a driver is
loaded. An explicit SQLite path must be in an existing folder (a typo must not grow a directory
tree); only the default folder, ``BATCHER_HOME``, is created (``open_store``). PostgreSQL connects
with a timeout, so a server that accepts and never answers is named instead of hanging.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every transaction starts
with ``BEGIN IMMEDIATE`` so that writers queue for the write lock up front instead of failing with
"database is locked" when a read transaction tries to upgrade; a session that only reads
(``Store.reading``) begins with a plain ``BEGIN`` instead and waits for no writer. PostgreSQL
needs nothing special.

This module is the one boundary where SQLAlchemy's ``OperationalError`` becomes a ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from jobs.errors import StoreError
from jobs.migrations import migrate
from jobs.settings import Settings, check_database_url

SQLITE_BUSY_TIMEOUT_S = 60.0
PG_CONNECT_TIMEOUT_S = 10  # a reachable server answers in milliseconds; a hung one never does
# SQLite's default page cache is 2 MB; claims and result writes touch mostly the hot ends of the
# indexes, so a few MB more serve them. The cache is per connection and fills up once the store
# is larger: at 32 MB, the runner's four connections held 128 MB of a ten-million-line job.
SQLITE_CACHE_KIB = 8_192


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Python's sqlite3 would issue its own BEGIN; turn that off and issue BEGIN IMMEDIATE below.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.close()


# Execution option of a transaction that only reads (``Store.reading``): on SQLite it begins with
# a plain BEGIN, a WAL snapshot that waits for no writer and holds no lock a writer waits for.
READ_ONLY = "batcher_read_only"


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for the store URL, with the per-backend settings described above."""
    check_database_url(url)
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        folder = Path(database).expanduser().parent
        if not folder.is_dir():
            raise StoreError(
                f"the folder {folder} of the store {url} does not exist; create it "
                "(mkdir -p) or set BATCHER_DATABASE_URL to a file in an existing folder"
            )
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def open_store(settings: Settings) -> Store:
    """The configured store; the default SQLite file's folder (``BATCHER_HOME``) is made if missing."""
    if settings.uses_default_store:
        settings.home.mkdir(parents=True, exist_ok=True)
    return Store(settings.effective_database_url)


class Store:
    """The SQL store: an engine with its schema migrated, handing out sessions."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        with self._translated():
            migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._translated(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session that only reads (it must write nothing): on SQLite it neither waits for the
        write lock nor takes it, so a control loop's status reads never queue behind a flush."""
        with self._translated(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if "timeout" in reason.lower() and not self.url.startswith("sqlite"):
                reason = f"the server did not answer within {PG_CONNECT_TIMEOUT_S} s ({reason})"
            raise StoreError(
                f"cannot use the store at {safe_url(self.url)}: {reason}; "
                "check BATCHER_DATABASE_URL and that the database is running"
            ) from None

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
