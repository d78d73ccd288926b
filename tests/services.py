"""Services the tests start for themselves, so no test touches a server it did not start.

``RedisServer`` runs a private ``redis-server`` on a free loopback port with its files in a
temporary folder; a test may stop, restart or flush it at will. ``PostgresDatabase`` creates a
database of its own on the local PostgreSQL and drops it at the end; tests use schemas inside it.
The machine's Redis on 6379 and the ``test`` database are never written, flushed or restarted
(``machine_redis_snapshot`` only reads the Redis, to prove that at the end of the session).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa


def free_port() -> int:
    """A TCP port on loopback nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceUnavailable(Exception):
    """Raised when a service the tests need cannot be started or reached."""


@dataclass
class RedisServer:
    """A ``redis-server`` of the test session's own, on a free port, persistence off."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise ServiceUnavailable(f"redis-server on port {self.port} did not start: see {self.folder}")

    def stop(self) -> None:
        """Stop at once, losing every key (the broker losing its data)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill and start again on the same port, empty."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Empty this server; refused unless this object started it (never someone else's Redis)."""
        if self.process is None or self.process.poll() is not None:
            raise ServiceUnavailable(f"refusing to flush port {self.port}: this RedisServer is not running")
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


def machine_redis_snapshot(port: int = 6379) -> tuple[str, frozenset[tuple[int, bytes]]] | None:
    """The run id and every key of a Redis the tests did not start (None when none runs)."""
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        run_id = str(client.info("server")["run_id"])
        keys = set()
        for db in client.info("keyspace"):
            scoped = redis.Redis(port=port, db=int(str(db).removeprefix("db")))
            keys |= {
                (scoped.connection_pool.connection_kwargs["db"], k) for k in scoped.scan_iter(count=1000)
            }
            scoped.close()
        return run_id, frozenset(keys)
    except redis.exceptions.ConnectionError:
        return None
    finally:
        client.close()


@dataclass
class PostgresDatabase:
    """A database created for the test session on the local PostgreSQL, dropped at the end."""

    server_url: str
    name: str = field(default_factory=lambda: f"batcher_test_{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return sa.make_url(self.server_url).set(database=self.name).render_as_string(hide_password=False)

    def _admin(self) -> sa.Engine:
        return sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT")

    def create(self) -> None:
        admin = self._admin()
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        except sa.exc.OperationalError as exc:
            raise ServiceUnavailable(f"PostgreSQL at {self.server_url} is not reachable") from exc
        finally:
            admin.dispose()

    def drop(self) -> None:
        admin = self._admin()
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        finally:
            admin.dispose()
