"""Shared pieces of the benchmark suite: the relay in its own process, input files, timed
subprocesses with their peak memory, and tables."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("BATCHER_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
KEY = "sk-bench-not-a-real-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Relay:
    """The dev relay running as its own process (its CPU is not the client's)."""

    url: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url.removesuffix("/v1") + "/_stats", timeout=10).json()
        return data

    def reset(self) -> None:
        """Zero the relay's counters and limits (``POST /_reset``)."""
        httpx.post(self.url.removesuffix("/v1") + "/_reset", timeout=10).raise_for_status()


@contextmanager
def relay(*args: str) -> Iterator[Relay]:
    """``batcher dev-relay`` with these options, on a free port, stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "batcher", "dev-relay", "--port", str(port), "--api-key", KEY, *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90  # a loaded machine starts Python slowly
    while True:
        try:
            httpx.get(url.removesuffix("/v1") + "/_stats", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    try:
        yield Relay(url, proc)
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def own_redis(tmp: Path) -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port (never the machine's 6379); its URL."""
    from tests.services import RedisServer

    server = RedisServer(tmp / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def env_for(
    tmp: Path, relay_url: str, db_url: str, broker_url: str = "redis://127.0.0.1:1/0", **extra: str
) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHER_", "OPENAI_"))}
    return (
        keep
        | {
            "OPENAI_BASE_URL": relay_url,
            "OPENAI_API_KEY": KEY,
            "BATCHER_DATABASE_URL": db_url,
            "BATCHER_HOME": str(tmp / "home"),
            "BATCHER_BROKER_URL": broker_url,
            "PYTHONPATH": str(ROOT),
        }
        | extra
    )


@dataclass(frozen=True)
class Timed:
    """A finished subprocess: wall seconds, peak RSS in MB, exit code, CPU seconds (user + system)."""

    seconds: float
    peak_mb: float
    returncode: int
    cpu: float = 0.0


def timed(command: Sequence[str], env: dict[str, str], *, log: Path | None = None) -> Timed:
    """Run a command and measure its wall time and peak resident memory (from wait4)."""
    out = log.open("wb") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(list(command), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log:
        out.close()  # type: ignore[union-attr]
    return Timed(seconds, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime)


def batcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "batcher", *args]


def write_lines(path: Path, rows: Iterator[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def embedding_rows(n: int, *, prefix: str = "doc") -> Iterator[dict[str, Any]]:
    for i in range(n):
        body = {"model": "text-embedding-3-small", "input": f"{prefix} {i}: the quick brown fox jumps"}
        yield {"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}


def chat_rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "max_tokens": 32,
        }
        yield {"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


@contextmanager
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of the benchmark's own, created for it and dropped afterwards.

    Never a schema inside an existing database: the server's ``test`` database is left alone.
    """
    from tests.services import PostgresDatabase

    database = PostgresDatabase(PG_BASE, name=f"batcher_bench_{uuid.uuid4().hex[:10]}")
    database.create()
    try:
        yield database.url
    finally:
        database.drop()


def compile_sources() -> None:
    """Write the project's bytecode once, as ``pip install`` does for an installed package.

    Every benchmark starts ``batcher`` processes from this checkout; where the environment sets
    ``PYTHONDONTWRITEBYTECODE`` (as some sandboxes do), each start would compile batcher's own
    modules from source again, about 0.6 s of CPU on the AMD machine, which an installed batcher
    never pays. Python still reads bytecode it finds, so compiling once puts both clients of a
    comparison on an installed footing.
    """
    packages = [str(ROOT / name) for name in ("batcher", "workers", "jobs", "benchmarks")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], command: str) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(f"\nreproduce: `{command}`", flush=True)
