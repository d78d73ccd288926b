"""Dataset-scale embedding benchmarks: cost per line at growing sizes, vectors of 1536 floats.

    python -m benchmarks.suite dataset         # 100k and 1M lines, SQLite
    python -m benchmarks.suite dataset-pg      # 100k and 1M lines, PostgreSQL
    python -m benchmarks.suite celery-scale    # 1M lines, Celery, 2 workers, PostgreSQL
    python -m benchmarks.suite vectors         # 20k lines of 1536 dimensions, float and base64
    python -m benchmarks.suite dataset-10m     # opt-in: 10M lines, SQLite (an hour of the machine)
    python -m benchmarks.suite dataset-pg-10m  # opt-in: 10M lines, PostgreSQL

Each job is generated (never committed), packed (the default), against the stand-in relay with
50 ms latency in its own process. Steps are timed apart (ingest, run, export) as subprocesses:
wall seconds, batcher's own CPU (user + system, from wait4) per line, and peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.harness import (
    Relay,
    Timed,
    batcher,
    embedding_rows,
    env_for,
    own_redis,
    pg_database,
    print_table,
    relay,
    timed,
    write_lines,
)

LATENCY = ("--latency", "0.05")


def _steps(tmp: Path, source: Path, env: dict[str, str], *, export_parquet: bool = False) -> list[Timed]:
    """Ingest, run and export as processes of their own; the first that fails stops the rest."""
    commands = [
        ("submit", ("submit", str(source), "--no-queue")),
        ("run", ("run-job", "1")),
        ("export", ("export", "1", "-o", str(tmp / "out.jsonl"))),
    ]
    if export_parquet:
        commands.append(("parquet", ("export", "1", "-o", str(tmp / "out.parquet"), "--format", "parquet")))
    steps = []
    for name, args in commands:
        steps.append(timed(batcher(*args), env, log=tmp / f"{name}.log"))
        if steps[-1].returncode != 0:
            raise RuntimeError(f"the {name} step failed (exit {steps[-1].returncode}): see {tmp / name}.log")
    return steps


def _row(label: str, n: int, t: Timed) -> tuple[str, ...]:
    return (
        label,
        f"{t.seconds:.1f}",
        f"{t.cpu:.1f}",
        f"{t.cpu / n * 1e6:.0f}",
        f"{t.peak_mb:.0f}",
        f"{n / t.seconds:,.0f}",
    )


_HEADERS = ("step", "wall s", "CPU s", "CPU µs/line", "peak RSS MB", "lines/s")


def _sqlite_bytes(tmp: Path) -> int:
    return sum(p.stat().st_size for p in tmp.glob("store.db*"))


def _one_size(tmp: Path, n: int, db_url: str, rows: Iterator[dict[str, Any]]) -> list[tuple[str, ...]]:
    source = write_lines(tmp / f"in-{n}.jsonl", rows)
    with relay(*LATENCY) as rl:
        env = env_for(tmp, rl.url, db_url)
        ingest, run, export = _steps(tmp, source, env)
    steps = (ingest, run, export)
    total = Timed(sum(t.seconds for t in steps), max(t.peak_mb for t in steps), 0, sum(t.cpu for t in steps))
    return [
        _row(f"{n:,}: ingest", n, ingest),
        _row(f"{n:,}: run", n, run),
        _row(f"{n:,}: export JSONL", n, export),
        _row(f"{n:,}: end to end", n, total),
    ]


def _dataset(tmp: Path, sizes: list[int], *, postgres: bool, title: str, command: str) -> None:
    rows: list[tuple[str, ...]] = []
    for n in sizes:
        folder = tmp / str(n)
        folder.mkdir()
        if postgres:
            with pg_database() as db_url:
                rows += _one_size(folder, n, db_url, embedding_rows(n))
        else:
            rows += _one_size(folder, n, f"sqlite:///{folder / 'store.db'}", embedding_rows(n))
            size = _sqlite_bytes(folder)
            rows.append((f"{n:,}: store", f"{size / 1e6:,.0f} MB", "", f"{size / n:,.0f} B/line", "", ""))
    print_table(title, _HEADERS, rows, command)


def dataset(tmp: Path) -> None:
    _dataset(
        tmp,
        [100_000, 1_000_000],
        postgres=False,
        title="6. Dataset scale: packed 8-dimension embedding lines, SQLite, relay latency 50 ms",
        command="python -m benchmarks.suite dataset",
    )


def dataset_pg(tmp: Path) -> None:
    _dataset(
        tmp,
        [100_000, 1_000_000],
        postgres=True,
        title="7. Dataset scale on PostgreSQL: packed 8-dimension embedding lines, relay latency 50 ms",
        command="python -m benchmarks.suite dataset-pg",
    )


def dataset_10m(tmp: Path) -> None:
    _dataset(
        tmp,
        [10_000_000],
        postgres=False,
        title="8. Ten million packed 8-dimension embedding lines, SQLite, relay latency 50 ms",
        command="python -m benchmarks.suite dataset-10m",
    )


def dataset_pg_10m(tmp: Path) -> None:
    _dataset(
        tmp,
        [10_000_000],
        postgres=True,
        title="8. Ten million packed 8-dimension embedding lines, PostgreSQL, relay latency 50 ms",
        command="python -m benchmarks.suite dataset-pg-10m",
    )


# --- Celery -------------------------------------------------------------------------------------


def _wait_done(db_url: str, total: int, timeout: float = 3600) -> None:
    engine = sa.create_engine(db_url)
    deadline = time.monotonic() + timeout
    query = sa.text("SELECT succeeded + failed + cancelled FROM job WHERE id = 1")
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(query).scalar_one() >= total:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the job did not finish in {timeout} s")
    finally:
        engine.dispose()


def _celery(tmp: Path, rl: Relay, source: Path, n: int, workers: int) -> float:
    from benchmarks.runs import start_worker

    with own_redis(tmp) as broker, pg_database() as db_url:
        env = env_for(tmp, rl.url, db_url, broker)
        subprocess.run(batcher("submit", str(source), "--no-queue"), env=env, check=True, capture_output=True)
        procs = [start_worker(tmp, env, f"w{i}") for i in range(workers)]
        time.sleep(5)  # workers up before the first message
        start = time.perf_counter()
        subprocess.run(batcher("resume", "1"), env=env, check=True, capture_output=True)
        _wait_done(db_url, n)
        seconds = time.perf_counter() - start
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    return seconds


def celery_scale(tmp: Path, n: int = 1_000_000) -> None:
    source = write_lines(tmp / "in.jsonl", embedding_rows(n))
    with relay(*LATENCY) as rl:
        seconds = _celery(tmp, rl, source, n, workers=2)
    rows = [("Celery, 2 workers, PostgreSQL: resume to last line", f"{seconds:.1f}", f"{n / seconds:,.0f}")]
    print_table(
        f"9. Celery at scale: {n:,} packed 8-dimension embedding lines, relay latency 50 ms",
        ("path", "wall s", "lines/s"),
        rows,
        "python -m benchmarks.suite celery-scale",
    )


# --- 1536-dimension vectors ------------------------------------------------------------------------


def _vector_rows(n: int, encoding: str) -> Iterator[dict[str, Any]]:
    for row in embedding_rows(n):
        row["body"] |= {"dimensions": 1536} | ({"encoding_format": "base64"} if encoding == "base64" else {})
        yield row


_STREAM = """
import sys, time
from pathlib import Path
from batcher.export import ExportFormat, export_job
import batcher.parquet_export
import pyarrow
from jobs.db import Store
folder, fmt = Path(sys.argv[1]), ExportFormat(sys.argv[2])
# pyarrow imports pandas, where installed, at its first array made of a Python list (0.4 s here):
# start-up too, paid once by a process whatever the job's size
pyarrow.array([0])
with Store(f"sqlite:///{folder / 'store.db'}") as store:
    start, cpu = time.perf_counter(), time.process_time()
    export_job(store, 1, folder / f"again.{fmt.value}", fmt=fmt)
    print(time.perf_counter() - start, time.process_time() - cpu)
"""


def _streams(folder: Path, n: int, encoding: str, env: dict[str, str]) -> list[tuple[str, ...]]:
    """Export rates without the process start-up (imports, store open): the stream alone.

    Its CPU seconds too (all threads): on a shared machine lines per CPU second is the rate that
    does not depend on what else runs.
    """
    rows = []
    for fmt in ("jsonl", "parquet"):
        command = [sys.executable, "-c", _STREAM, str(folder), fmt]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        seconds, cpu = (float(x) for x in out.split())
        label = f"{encoding}: {fmt} stream alone ({n / cpu:,.0f} lines per CPU s)"
        rows.append(
            (label, f"{seconds:.2f}", f"{cpu:.2f}", f"{cpu / n * 1e6:.0f}", "", f"{n / seconds:,.0f}")
        )
    return rows


def vectors(tmp: Path, n: int = 20_000) -> None:
    rows: list[tuple[str, ...]] = []
    for encoding in ("float", "base64"):
        folder = tmp / encoding
        folder.mkdir()
        source = write_lines(folder / "in.jsonl", _vector_rows(n, encoding))
        with relay(*LATENCY) as rl:
            env = env_for(folder, rl.url, f"sqlite:///{folder / 'store.db'}")
            _, run, export, parquet = _steps(folder, source, env, export_parquet=True)
        size = _sqlite_bytes(folder)
        rows += [
            _row(f"{encoding}: run", n, run),
            _row(f"{encoding}: export JSONL", n, export),
            _row(f"{encoding}: export Parquet", n, parquet),
            *_streams(folder, n, encoding, env),
            (f"{encoding}: store", f"{size / 1e6:,.0f} MB", "", f"{size / n:,.0f} B/line", "", ""),
        ]
        first = json.loads((folder / "out.jsonl").open().readline())
        assert len(first["response"]["body"]["data"][0]["embedding"]) in (1536, 8192)
    print_table(
        f"10. Vectors: {n:,} lines of 1536 dimensions (text-embedding-3-small's size), SQLite",
        _HEADERS,
        rows,
        "python -m benchmarks.suite vectors",
    )
