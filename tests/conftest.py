"""Shared fixtures: an isolated home per test, stores on SQLite and on the real PostgreSQL.

PostgreSQL tests run against the server on 127.0.0.1:5432 (database ``test``), each in a schema
of its own that is dropped afterwards. Where the server is missing they skip on a laptop but fail
under CI (``CI=true``), so a green CI run always means they ran.
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

PG_BASE = os.environ.get("BATCHER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_ENV_NAMES = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "BATCHER_BASE_URL",
    "BATCHER_API_KEY",
    "BATCHER_DATABASE_URL",
    "BATCHER_HOME",
    "BATCHER_BROKER_URL",
    "BATCHER_REDIS_URL",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own BATCHER_HOME and none of the developer's settings."""
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach for the network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return home


def unavailable(what: str) -> None:
    """Skip on a laptop, fail under CI: a service test must not silently not run in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not reachable, and CI must run these tests")
    pytest.skip(f"{what} is not reachable")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh, empty schema on the local PostgreSQL."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_BASE)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError:
        admin.dispose()
        unavailable("PostgreSQL on 127.0.0.1:5432")
    sep = "&" if "?" in PG_BASE else "?"
    yield f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
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


REDIS_TEST_URL = os.environ.get("BATCHER_TEST_REDIS", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_url() -> str:
    """The real local Redis (a database of its own), emptied for the test."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError:
        unavailable("Redis on 127.0.0.1:6379")
    finally:
        client.close()
    return REDIS_TEST_URL


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
