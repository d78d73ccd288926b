"""Whole benchmark jobs for the pace benchmarks: ``batcher run`` on SQLite, or Celery workers on a
Redis of their own with the store in a fresh PostgreSQL schema; each ends with its lines by state."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from benchmarks.harness import Relay, batcher, env_for, own_redis, pg_database, timed


@dataclass(frozen=True)
class JobRun:
    """A finished benchmark job: wall seconds and its lines by state."""

    seconds: float
    counts: dict[str, int]


def line_counts(db_url: str, job_id: int = 1) -> dict[str, int]:
    """The job's lines by state."""
    engine = sa.create_engine(db_url)
    query = sa.text("SELECT state, count(*) FROM request WHERE job_id = :j GROUP BY state")
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"j": job_id}).all()
    finally:
        engine.dispose()
    return {str(state): int(n) for state, n in rows}


def embedded_run(tmp: Path, rl: Relay, source: Path, *, options: list[str], name: str = "run") -> JobRun:
    """``batcher run`` on SQLite: wall seconds (process start-up included) and lines by state."""
    db_url = f"sqlite:///{tmp / (name + '.db')}"
    env = env_for(tmp, rl.url, db_url)
    run = timed(batcher("run", str(source), "-o", str(tmp / (name + ".out.jsonl")), *options), env)
    return JobRun(run.seconds, line_counts(db_url))


def celery_run(tmp: Path, rl: Relay, source: Path, *, workers: int, options: list[str]) -> JobRun:
    """Seconds from ``resume`` to the last line done, with ``workers`` worker processes."""
    with own_redis(tmp) as broker, pg_database() as db_url:
        env = env_for(tmp, rl.url, db_url, broker)
        subprocess.run(
            batcher("submit", str(source), "--no-queue", *options), env=env, check=True, capture_output=True
        )
        procs = [start_worker(tmp, env, f"w{i}") for i in range(workers)]
        time.sleep(4)  # workers up before the first message
        start = time.perf_counter()
        subprocess.run(batcher("resume", "1"), env=env, check=True, capture_output=True)
        _wait_done(db_url)
        seconds = time.perf_counter() - start
        counts = line_counts(db_url)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    return JobRun(seconds, counts)


def start_worker(tmp: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n", f"{name}@%h"]
    command += ["--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    with (tmp / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_done(db_url: str, timeout: float = 900) -> None:
    engine = sa.create_engine(db_url)
    deadline = time.monotonic() + timeout
    query = sa.text("SELECT count(*) FROM request WHERE job_id = 1 AND state IN ('pending', 'running')")
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(query).scalar_one() == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the job did not finish in {timeout} s")
    finally:
        engine.dispose()
