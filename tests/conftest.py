"""Shared fixtures: an isolated home per test, stores on SQLite and on the real PostgreSQL.

The tests leave the machine's services alone. PostgreSQL tests run in a database the session
creates on 127.0.0.1:5432 and drops at the end (each test in a schema of its own inside it);
Redis tests use a ``redis-server`` the session starts on a free port (``tests/services.py``).
Where a service is missing they skip on a laptop but fail under CI (``CI=true``), so a green
CI run always means they ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from batcher.devrelay import RelayConfig, RelayServer
from jobs.db import Store
from tests.helpers import RELAY_KEY
from tests.services import PostgresDatabase, RedisServer, ServiceUnavailable, machine_redis_snapshot

PG_SERVER = os.environ.get("BATCHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_ENV_NAMES = (
    "BATCHER_CONFIG",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "BATCHER_BASE_URL",
    "BATCHER_API_KEY",
    "BATCHER_DATABASE_URL",
    "BATCHER_HOME",
    "BATCHER_BROKER_URL",
    "BATCHER_REDIS_URL",
)


NO_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a test that needs Redis asks for one


@pytest.fixture(scope="session", autouse=True)
def machine_redis_untouched() -> Iterator[None]:
    """Fail the session if the machine's own Redis on 6379 was restarted or its keys changed."""
    before = machine_redis_snapshot()
    yield
    after = machine_redis_snapshot()
    assert after == before, f"the tests changed the machine's Redis on 6379: {before} -> {after}"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own BATCHER_HOME and none of the developer's settings."""
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHER_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no batcher.toml of the user's
    monkeypatch.setenv("BATCHER_BROKER_URL", NO_BROKER)  # never the machine's Redis by default
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach for the network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return home


def unavailable(what: str) -> None:
    """Skip on a laptop, fail under CI: a service test must not silently not run in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not reachable, and CI must run these tests")
    pytest.skip(f"{what} is not reachable")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PostgresDatabase]:
    """A database of the session's own on the local PostgreSQL, dropped at the end."""
    database = PostgresDatabase(PG_SERVER)
    try:
        database.create()
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    yield database
    database.drop()


@pytest.fixture
def pg_url(pg_database: PostgresDatabase) -> Iterator[str]:
    """A URL to a fresh, empty schema in the session's PostgreSQL database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_database.url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{pg_database.url}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store URL for each backend the tests must pass on."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on each backend."""
    s = Store(store_url)
    yield s
    s.close()


def start_redis(folder: Path) -> RedisServer:
    """A private ``redis-server``; skips (fails under CI) when it cannot be started."""
    server = RedisServer(folder)
    try:
        server.start()
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's own Redis, shared by the tests that only read and write it."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's own Redis, emptied for the test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test before this one stopped it
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for this test alone, which it may kill and restart."""
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def relay() -> Iterator[RelayServer]:
    """The stand-in relay on loopback, requiring ``RELAY_KEY``."""
    with RelayServer(RelayConfig(api_key=RELAY_KEY)) as server:
        yield server


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, relay: RelayServer, store_url: str) -> str:
    """Point the CLI at the relay and at the store of this test's backend; return the store URL."""
    monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
    monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
    monkeypatch.setenv("BATCHER_DATABASE_URL", store_url)
    return store_url


@pytest.fixture
def db(env: str) -> Iterator[Store]:
    """The store the CLI writes to, for the test to read."""
    with Store(env) as store:
        yield store
