"""The benchmark suite: speed and limits against the stand-in relay on loopback.

    python -m benchmarks.suite                 # everything (about 10 minutes here)
    python -m benchmarks.suite overhead limits # some of it
    python -m benchmarks.suite dataset-10m     # opt-in: ten million lines (benchmarks/dataset.py)
    python -m benchmarks.suite dataset-pg-10m  # opt-in: the same on PostgreSQL

Each benchmark prints a table and the command that reproduces it. The relay runs in its own
process; Celery runs real worker processes on the local Redis with the store on the local
PostgreSQL; `batcher run` uses SQLite. Benchmarks measure; the tests check behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from benchmarks import dataset, pace
from benchmarks.harness import (
    KEY,
    batcher,
    chat_rows,
    compile_sources,
    embedding_rows,
    env_for,
    machine,
    print_table,
    relay,
    timed,
    write_lines,
)
from benchmarks.runs import celery_run

# --- 1. overhead ---------------------------------------------------------------------------------


async def _reference(url: str, lines: Path, out: Path, concurrency: int) -> None:
    """The floor: a plain asyncio + aiohttp loop that only writes results to a JSONL file."""
    rows = [json.loads(x) for x in lines.read_text().splitlines()]
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        with out.open("w") as f:

            async def one(row: dict[str, Any]) -> None:
                async with sem, session.post(url + "/embeddings", json=row["body"], headers=headers) as r:
                    body = await r.json()
                f.write(json.dumps({"custom_id": row["custom_id"], "body": body}) + "\n")

            await asyncio.gather(*(one(r) for r in rows))


def overhead(tmp: Path, n: int = 5000, concurrency: int = 64) -> None:
    source = write_lines(tmp / "overhead.jsonl", embedding_rows(n))
    run_opts = ["--no-pack", "--max-in-flight", str(concurrency)]
    with relay("--latency", "0.05") as rl:
        start = time.perf_counter()
        asyncio.run(_reference(rl.url, source, tmp / "ref.jsonl", concurrency))
        ref = n / (time.perf_counter() - start)
        env = env_for(tmp, rl.url, f"sqlite:///{tmp / 'overhead.db'}")
        embedded = timed(batcher("run", str(source), "-o", str(tmp / "out.jsonl"), *run_opts), env)
        celery = celery_run(tmp, rl, source, workers=2, options=run_opts).seconds
    rows = [
        ("reference (aiohttp loop → JSONL)", f"{ref:.0f}", "1.00"),
        (
            "batcher run (SQLite, in-process)",
            f"{n / embedded.seconds:.0f}",
            f"{n / embedded.seconds / ref:.2f}",
        ),
        ("Celery, 2 workers (PostgreSQL)", f"{n / celery:.0f}", f"{n / celery / ref:.2f}"),
    ]
    print_table(
        f"1. Overhead: {n} embedding lines, relay latency 50 ms, concurrency {concurrency}, no limits",
        ("client", "lines/s", "× reference"),
        rows,
        "python -m benchmarks.suite overhead",
    )


# --- 2. limit adherence ----------------------------------------------------------------------------


def limits(tmp: Path, n: int = 5000, rps: int = 100) -> None:
    source = write_lines(tmp / "limits.jsonl", embedding_rows(n))
    with relay("--latency", "0.05", "--rps-limit", str(rps)) as rl:
        seconds = celery_run(
            tmp, rl, source, workers=2, options=["--no-pack", "--rpm", str(rps * 60)]
        ).seconds
        stats = rl.stats()
    admitted = {int(k): v for k, v in stats["limits"]["admitted_per_second"].items()}  # the relay's clock
    steady = [admitted[s] for s in sorted(admitted)[2:-1]]
    served = stats["served"]
    rate = sum(steady) / len(steady)
    busiest = stats["limits"]["busiest_window"]
    limited, calls = stats["rate_limited"], stats["calls"]
    rows = [
        ("achieved rate (steady seconds)", f"{rate:.1f} req/s", f"{rate / rps:.1%}"),
        ("busiest 1 s window", f"{busiest:.0f} req", f"{busiest / rps:.0%}"),
        ("calls answered 429", f"{limited} of {calls}", f"{limited / calls:.2%}"),
        ("lines lost", str(max(0, n - served)), ""),
        ("wall time", f"{seconds:.1f} s", ""),
    ]  # fmt: skip
    print_table(
        f"2. Limit adherence: relay allows {rps} req/s (per-second window), {n} lines, 2 workers",
        ("measure", "value", "of limit"),
        rows,
        "python -m benchmarks.suite limits",
    )


# --- 3. faults -----------------------------------------------------------------------------------


def faults(tmp: Path, n: int = 2000) -> None:
    source = write_lines(tmp / "faults.jsonl", chat_rows(n))
    mix = ",".join(["503"] * 5 + ["500"] * 2 + ["hang"])  # 5 % 503, 2 % 500, 1 % hangs
    args = ("--latency", "0.05", "--fault-rate", "0.08", "--faults", mix, "--hang-seconds", "30")
    with relay(*args) as rl:
        env = env_for(tmp, rl.url, f"sqlite:///{tmp / 'faults.db'}")
        out = tmp / "faults.out.jsonl"
        run = timed(
            batcher("run", str(source), "-o", str(out), "--timeout", "3", "--max-in-flight", "64"), env
        )
        stats = rl.stats()
    results = [json.loads(x) for x in out.read_text().splitlines()]
    ok = sum(1 for r in results if r["error"] is None)
    rows = [
        ("lines/s", f"{n / run.seconds:.0f}"),
        ("lines succeeded", f"{ok} of {n}"),
        ("lines lost", str(n - len(results))),
        ("calls", str(stats["calls"])),
        ("extra calls (retries)", str(stats["calls"] - n)),
        ("faults injected", json.dumps(stats["by_fault"])),
    ]
    print_table(
        f"3. Faults: {n} chat lines, 5 % 503, 2 % 500, 1 % hangs (timeout 3 s)",
        ("measure", "value"),
        rows,
        "python -m benchmarks.suite faults",
    )


# --- 4. scale ------------------------------------------------------------------------------------


def _fill_results(db_url: str) -> None:
    """Mark every line succeeded with a small embedding answer, as if the job had run."""
    body = json.dumps(
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * 8}]}
    )
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE request SET state='succeeded', status_code=200, response_body=:b, prompt_tokens=8, "
                "total_tokens=8, completion_tokens=0"
            ),
            {"b": body},
        )
    engine.dispose()


def scale(tmp: Path, n: int = 1_000_000) -> None:
    source = write_lines(tmp / "scale.jsonl", embedding_rows(n))
    db_url = f"sqlite:///{tmp / 'scale.db'}"
    env = env_for(tmp, "http://127.0.0.1:9/v1", db_url)
    ingest = timed(batcher("submit", str(source), "--no-queue"), env)
    _fill_results(db_url)
    export = timed(batcher("export", "1", "-o", str(tmp / "scale.out.jsonl")), env)
    parquet = timed(batcher("export", "1", "-o", str(tmp / "scale.parquet"), "--format", "parquet"), env)
    size_mb = source.stat().st_size / 1e6
    rows = [
        (
            "ingest (validate + store)",
            f"{ingest.seconds:.1f}",
            f"{ingest.peak_mb:.0f}",
            f"{n / ingest.seconds:,.0f}",
        ),
        ("export JSONL", f"{export.seconds:.1f}", f"{export.peak_mb:.0f}", f"{n / export.seconds:,.0f}"),
        ("export Parquet", f"{parquet.seconds:.1f}", f"{parquet.peak_mb:.0f}", f"{n / parquet.seconds:,.0f}"),
    ]
    print_table(
        f"4. Scale: {n:,} lines ({size_mb:.0f} MB), SQLite",
        ("step", "seconds", "peak RSS MB", "lines/s"),
        rows,
        "python -m benchmarks.suite scale",
    )


# --- 5. packing ----------------------------------------------------------------------------------


def packing(tmp: Path, n: int = 100_000, rpm: int = 600) -> None:
    source = write_lines(tmp / "packing.jsonl", embedding_rows(n))
    with relay("--latency", "0.05") as rl:
        env = env_for(tmp, rl.url, f"sqlite:///{tmp / 'packing.db'}")
        run = timed(batcher("run", str(source), "-o", str(tmp / "packing.out.jsonl"), "--rpm", str(rpm)), env)
        calls = rl.stats()["calls"]
    unpacked_minutes = n / rpm
    rows = [
        ("packed (256 inputs per call)", str(calls), f"{run.seconds:.0f} s"),
        (
            "one line per call (from the limit)",
            str(n),
            f"{unpacked_minutes * 60:.0f} s ({unpacked_minutes:.0f} min)",
        ),
        ("ratio", f"{n / calls:.0f}× fewer calls", f"{unpacked_minutes * 60 / run.seconds:.0f}× faster"),
    ]
    print_table(
        f"5. Packing: {n:,} one-string embedding lines under {rpm} RPM",
        ("mode", "calls", "time"),
        rows,
        "python -m benchmarks.suite packing",
    )


BENCHMARKS: dict[str, Callable[[Path], None]] = {
    "overhead": overhead,
    "limits": limits,
    "faults": faults,
    "scale": scale,
    "packing": packing,
    "dataset": dataset.dataset,
    "dataset-pg": dataset.dataset_pg,
    "celery-scale": dataset.celery_scale,
    "vectors": dataset.vectors,
    "dataset-10m": dataset.dataset_10m,
    "dataset-pg-10m": dataset.dataset_pg_10m,
    **pace.BENCHMARKS,
}
OPT_IN = {"dataset-10m", "dataset-pg-10m"}  # an hour of the machine: only when named


def main() -> None:
    parser = argparse.ArgumentParser(description="batcher's benchmark suite")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="which to run (default: all)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    compile_sources()
    for name in args.names or [name for name in BENCHMARKS if name not in OPT_IN]:
        with tempfile.TemporaryDirectory(prefix=f"batcher-bench-{name}-") as tmp:
            BENCHMARKS[name](Path(tmp))


if __name__ == "__main__":
    main()
