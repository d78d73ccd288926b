"""The pace benchmarks: limits used fully, limits found, overloads, gateways' hints, and batcher
against openai-cookbook's parallel processor, all against the stand-in relay enforcing as real
relays do (``batcher dev-relay --limit-*``, ``--max-concurrent``).

    python -m benchmarks.suite known unknown overload hints cookbook

"% of the limit" is what the relay's limits admitted per second by their own clock (the one the
windows count by; the successful answers per second when the relay has no limit), averaged over
the seconds after the warm-up (the first ``WARM_UP_S``) and before the job's drain (``steady``),
over the limit; "429s" is the share of the calls it refused in those same seconds (and over the whole job,
warm-up included); "busiest window" is the most requests one of its windows ever held.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import at_cap
from benchmarks.harness import (
    Relay,
    batcher,
    chat_rows,
    embedding_rows,
    env_for,
    print_table,
    relay,
    timed,
    write_lines,
)
from benchmarks.runs import celery_run, embedded_run, line_counts

WARM_UP_S = 5
LIMIT = 100  # requests per second the limited relays allow


def per_second(stats: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Calls and admitted calls (successful answers, without limits) in each second the relay saw."""
    calls = {int(k): v for k, v in stats["per_second"].items()}
    admitted = stats.get("limits", {}).get("admitted_per_second") or stats["answered_per_second"]
    ok = {int(k): v for k, v in admitted.items()}
    seconds = sorted(calls)
    return [calls[s] for s in seconds], [ok.get(s, 0) for s in seconds]


def steady(stats: dict[str, Any], *, warm_up: int = WARM_UP_S) -> tuple[float, float]:
    """(successes per second, share of calls refused) after the warm-up, before the drain.

    The drain is the job's tail: the trailing seconds holding under half the median second's
    calls (retries that waited out a Retry-After after the last fresh line went out) and the
    partial second before them in which the work ran out.
    """
    calls, ok = per_second(stats)
    head = min(warm_up, max(0, len(calls) - 3))
    calls, ok = calls[head:], ok[head:]
    end = steady_end(calls)
    calls, ok = calls[:end], ok[:end]
    if not calls:
        return 0.0, 0.0
    return sum(ok) / len(ok), (sum(calls) - sum(ok)) / max(1, sum(calls))


def steady_end(calls: list[int]) -> int:
    """Where the drain of these per-second call counts starts (see ``steady``)."""
    if len(calls) < 3:
        return max(0, len(calls) - 1)
    half = statistics.median(calls) / 2
    end = len(calls)
    while end > 1 and calls[end - 1] < half:
        end -= 1
    return end - 1


def refused_share(stats: dict[str, Any]) -> float:
    """Share of all the job's calls answered 429 or 503 by the relay's limits."""
    return (stats["rate_limited"] + stats["overloaded"]) / max(1, stats["calls"])


def _limited_relay(mode: str, latency: str, *extra: str) -> Any:
    return relay("--latency", latency, "--limit-requests", str(LIMIT), "--limit-mode", mode, *extra)


def known(tmp: Path) -> None:
    """Known limits: --rpm 6000 against 100 req/s, each enforcement mode, in-process and 2 workers."""
    rows = []
    chats = write_lines(tmp / "chat.jsonl", chat_rows(2000))
    embeds = write_lines(tmp / "emb.jsonl", embedding_rows(3000))
    for mode in ("fixed", "sliding", "bucket"):
        with _limited_relay(mode, "0.05") as rl:
            run = embedded_run(tmp, rl, chats, options=["--rpm", "6000"], name=f"known-{mode}")
            rows.append(_known_row(mode, "batcher run, 2,000 chat lines, 50 ms", rl.stats(), run.counts))
        with _limited_relay(mode, "0.03") as rl:
            job = celery_run(tmp, rl, embeds, workers=2, options=["--no-pack", "--rpm", "6000"])
            rows.append(_known_row(mode, "2 Celery workers, 3,000 lines, 30 ms", rl.stats(), job.counts))
    print_table(
        f"Known limit used: --rpm 6000, relay allows {LIMIT} req/s (1 s windows)",
        (
            "relay counts by",
            "client",
            "% of limit",
            "429s (steady)",
            "429s (all)",
            "busiest window",
            "failed lines",
        ),
        rows,
        "python -m benchmarks.suite known",
    )


def _known_row(mode: str, client: str, stats: dict[str, Any], counts: dict[str, int]) -> tuple[str, ...]:
    rate, refused = steady(stats, warm_up=2)
    return (
        mode,
        client,
        f"{rate / LIMIT:.1%}",
        f"{refused:.2%}",
        f"{refused_share(stats):.2%}",
        f"{stats['limits']['busiest_window']:.0f} of {LIMIT}",
        str(counts.get("failed", 0)),
    )


def unknown(tmp: Path) -> None:
    """Unknown limits: no --rpm, a sliding 100 req/s window; found, then reused by the next job."""
    chats = write_lines(tmp / "chat.jsonl", chat_rows(3000))
    embeds = write_lines(tmp / "emb.jsonl", embedding_rows(3000))
    rows = []
    with _limited_relay("sliding", "0.03") as rl:
        first = embedded_run(tmp, rl, chats, options=[], name="unknown")
        rows.append(_unknown_row("batcher run, 3,000 chat lines (finds it)", rl.stats(), first.counts))
        rl.reset()
        home_db = tmp / "unknown.db"  # the same store: the learned pace is there
        second = _rerun(tmp, rl, chats, home_db)
        rows.append(_unknown_row("the next job, same store (starts from it)", rl.stats(), second))
    with _limited_relay("sliding", "0.03") as rl:
        job = celery_run(tmp, rl, embeds, workers=2, options=["--no-pack"])
        rows.append(_unknown_row("2 Celery workers, 3,000 embedding lines", rl.stats(), job.counts))
    print_table(
        f"Unknown limit found: no --rpm, relay allows {LIMIT} req/s (sliding 1 s window), 30 ms",
        ("client", "% of limit after warm-up", "429s after warm-up", "429s (all)", "calls / line", "failed"),
        rows,
        "python -m benchmarks.suite unknown",
    )


def _rerun(tmp: Path, rl: Relay, source: Path, db: Path) -> dict[str, int]:
    env = env_for(tmp, rl.url, f"sqlite:///{db}")
    timed(batcher("run", str(source), "--new", "-o", str(tmp / "again.out.jsonl")), env)
    return line_counts(f"sqlite:///{db}", job_id=2)


def _unknown_row(client: str, stats: dict[str, Any], counts: dict[str, int]) -> tuple[str, ...]:
    rate, refused = steady(stats)
    lines = max(1, sum(counts.values()))
    return (
        client,
        f"{rate / LIMIT:.1%}",
        f"{refused:.2%}",
        f"{refused_share(stats):.2%}",
        f"{stats['calls'] / lines:.2f}",
        str(counts.get("failed", 0)),
    )


def overload(tmp: Path, n: int = 3000, cap: int = 20, latency: float = 0.05) -> None:
    """A relay answering 503 upstream_overloaded (Retry-After 1) past 20 calls in flight."""
    source = write_lines(tmp / "chat.jsonl", chat_rows(n))
    args = ("--latency", str(latency), "--max-concurrent", str(cap), "--overload-retry-after", "1")
    with relay(*args) as rl:
        run = embedded_run(tmp, rl, source, options=[], name="overload")
        stats = rl.stats()
        rl.reset()
        exact = at_cap.lines_per_second(rl.url, source, cap)
    best, mean = cap / latency, stats["limits"]["mean_in_flight"]
    rate, refused = steady(stats, warm_up=2)
    rows = [
        ("lines/s (steady)", f"{rate:.0f}", f"{rate / best:.1%} of {best:.0f}"),
        (f"a client holding exactly {cap} (aiohttp, no store)", f"{exact:.0f}", f"{exact / best:.1%}"),
        ("batcher / that client", f"{rate / exact:.1%}", ""),
        ("lines/s (whole job, start-up included)", f"{n / run.seconds:.0f}", ""),
        ("calls answered 503 (steady / all)", f"{refused:.2%} / {refused_share(stats):.2%}", ""),
        ("peak calls in flight at the relay", str(stats["peak_in_flight"]), ""),
        ("mean calls in flight at the relay (its own count)", f"{mean:.1f}", f"{mean / cap:.1%} of {cap}"),
        ("failed lines", str(run.counts.get("failed", 0)), ""),
        ("wall time", f"{run.seconds:.1f} s", ""),
    ]  # fmt: skip
    print_table(
        f"Overload: `batcher run` {n} chat lines, defaults; relay 503s past {cap} in flight, {latency:.2f} s",
        ("measure", "value", "target ≥ 90 %"),
        rows,
        "python -m benchmarks.suite overload",
    )


def hints(tmp: Path) -> None:
    """Gateways' hints: llmock's short retry-after-ms beside a 59.5 s reset, LiteLLM's renamed headers."""
    chats = write_lines(tmp / "chat.jsonl", chat_rows(600))
    with relay("--latency", "0.05") as rl:
        clean = embedded_run(tmp, rl, chats, options=[], name="clean")
    args = ("--latency", "0.05", "--fault-rate", "0.01", "--faults", "429_window", "--retry-after", "0.012")
    with relay(*args) as rl:
        llmock = embedded_run(tmp, rl, chats, options=[], name="llmock")
    waits = _retry_waits(tmp / "llmock.db")
    small = write_lines(tmp / "small.jsonl", chat_rows(420))
    with relay("--latency", "0.05", "--limit-requests", "10", "--limit-hints", "litellm") as rl:
        litellm = embedded_run(tmp, rl, small, options=[], name="litellm")
        stats = rl.stats()
    rows = [
        ("llmock 429 (retry-after-ms 12, remaining 0, reset 59.5s), 1 %", "median wait before the retry",
         f"{statistics.median(waits) * 1000:.0f} ms" if waits else "-"),
        ("", "job time / the same job with no 429", f"{llmock.seconds:.1f} s / {clean.seconds:.1f} s"),
        ("LiteLLM spellings, upstream 10 req/s, no --rpm, 420 lines", "failed lines",
         str(litellm.counts.get("failed", 0))),
        ("", "429s (all)", f"{refused_share(stats):.1%}"),
        ("", "job time (the limit allows 42 s)", f"{litellm.seconds:.1f} s"),
    ]  # fmt: skip
    print_table(
        "Gateways' hints: Retry-After wins over x-ratelimit-reset; llm_provider-retry-after is read",
        ("relay", "measure", "value"),
        rows,
        "python -m benchmarks.suite hints",
    )


def _retry_waits(db: Path) -> list[float]:
    """Seconds from each 429 to the next call of the same line."""
    engine = sa.create_engine(f"sqlite:///{db}")
    query = "SELECT request_id, started_at, duration_ms, status_code FROM attempt ORDER BY request_id, id"
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(query)).all()
    finally:
        engine.dispose()
    waits = []
    for before, after in itertools.pairwise(rows):
        if before[0] == after[0] and before[3] == 429:
            gap = datetime.fromisoformat(str(after[1])) - datetime.fromisoformat(str(before[1]))
            waits.append(gap.total_seconds() - before[2] / 1000)
    return waits


def cookbook(tmp: Path, n: int = 5000) -> None:
    """Defaults, 50 ms relay, no limit: batcher run against the cookbook's dispatch loop."""
    source = write_lines(tmp / "emb.jsonl", embedding_rows(n))
    with relay("--latency", "0.05") as rl:
        command = [sys.executable, "-m", "benchmarks.cookbook", str(source), str(tmp / "cookbook.out.jsonl")]
        ref = timed([*command, "--url", rl.url + "/embeddings"], env_for(tmp, rl.url, "sqlite://"))
        run = embedded_run(tmp, rl, source, options=["--no-pack"], name="cookbook")
    cookbook_rate, batcher_rate = n / ref.seconds, n / run.seconds
    rows = [
        ("openai-cookbook api_request_parallel_processor (stand-in)", f"{cookbook_rate:.0f}", "1.00"),
        ("batcher run --no-pack, defaults (SQLite, end to end)", f"{batcher_rate:.0f}",
         f"{batcher_rate / cookbook_rate:.2f}"),
    ]  # fmt: skip
    print_table(
        f"Concurrency found: {n} embedding lines, relay latency 50 ms, no limit, defaults",
        ("client", "lines/s", "× cookbook (target ≥ 2)"),
        rows,
        "python -m benchmarks.suite cookbook",
    )
    print(json.dumps({"failed": run.counts.get("failed", 0)}))


BENCHMARKS = {"known": known, "unknown": unknown, "overload": overload, "hints": hints, "cookbook": cookbook}
