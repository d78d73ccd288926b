"""A real local cluster for distributed tests: Celery worker subprocesses on the local Redis,
the store on the local PostgreSQL, and the stand-in relay on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from batcher.devrelay import RelayConfig, RelayServer
from batcher.ingest import IngestOptions, ingest_file
from jobs import store as q
from jobs.db import Store
from jobs.options import JobOptions
from jobs.settings import load_settings
from workers.app import make_app
from workers.dispatch import celery_publisher, start_distributed

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cluster:
    """Workers, store and broker of one test; ``stop`` ends every worker it started."""

    tmp: Path
    env: dict[str, str]
    store: Store
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def broker_url(self) -> str:
        return self.env["BATCHER_BROKER_URL"]

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    def start_worker(self, name: str, *, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-n", f"{name}@%h", "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        handle = log.open("ab")
        proc = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        self.workers[name], self.logs[name] = proc, log
        return proc

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def submit(self, rows_path: Path, *, options: dict[str, Any] | None = None) -> int:
        result = ingest_file(
            self.store,
            rows_path,
            IngestOptions(new=True, job_options=JobOptions.model_validate(options or {})),
        )
        assert result.job.id is not None
        app = make_app(load_settings(broker_url=self.broker_url))
        client = self.redis()
        try:
            start_distributed(self.store, result.job.id, celery_publisher(app), client)
        finally:
            client.close()
        return result.job.id

    def counts(self, job_id: int) -> dict[str, int]:
        with self.store.session() as s:
            return q.state_counts(s, job_id)

    def wait_done(
        self, job_id: int, *, timeout: float = 120.0, tick: Callable[[], None] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts(job_id)
            if counts["pending"] == counts["running"] == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not finish: {counts}\n{self.tail_logs()}")
            if tick is not None:
                tick()
            time.sleep(0.2)

    def tail_logs(self, lines: int = 30) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the worker processes this cluster started (SIGTERM, then SIGKILL); the broker and
        the store are left as they are: the fixture that made them takes them down."""
        for proc in self.workers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()


def child_pids(pid: int) -> Sequence[int]:
    """The pool children of a worker process."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(x) for x in out.split()]


def wait_for_children(pid: int, timeout: float = 90.0) -> Sequence[int]:
    """The pool children of a worker, once it has forked them (a loaded machine starts slowly)."""
    deadline = time.monotonic() + timeout
    while not (children := child_pids(pid)):
        if time.monotonic() > deadline:
            raise AssertionError(f"worker {pid} started no pool process in {timeout:.0f} s")
        time.sleep(0.2)
    return children


def cluster_env(tmp: Path, *, relay_url: str, key: str, db_url: str, broker_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHER_", "OPENAI_"))}
    return keep | {
        "OPENAI_BASE_URL": relay_url,
        "OPENAI_API_KEY": key,
        "BATCHER_DATABASE_URL": db_url,
        "BATCHER_BROKER_URL": broker_url,
        "BATCHER_HOME": str(tmp / "home"),
        "PYTHONPATH": str(ROOT),
    }


@contextmanager
def workers_on(tmp: Path, *, relay_url: str, key: str, db_url: str, broker_url: str) -> Iterator[Cluster]:
    """A cluster of this test's own workers on ``broker_url``, stopped (and its store closed) after."""
    c = Cluster(
        tmp,
        cluster_env(tmp, relay_url=relay_url, key=key, db_url=db_url, broker_url=broker_url),
        Store(db_url),
    )
    try:
        yield c
    finally:
        c.stop()
        c.store.close()


@contextmanager
def relay_cluster(
    tmp: Path, config: RelayConfig, *, broker_url: str, db_url: str
) -> Iterator[tuple[Cluster, RelayServer]]:
    """A stand-in relay of its own with ``config``, and a cluster of workers calling it."""
    assert config.api_key, "the workers call the relay with its key: give the config one"
    with (
        RelayServer(config) as relay,
        workers_on(tmp, relay_url=relay.url, key=config.api_key, db_url=db_url, broker_url=broker_url) as c,
    ):
        yield c, relay
