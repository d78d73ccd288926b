"""How long the dashboard's reads take over a big store: 1,000 jobs and one job of N lines.

    python -m benchmarks.dashboard --lines 1000000 [--store-url URL] [--walk]

Builds a store (SQLite in a temporary folder, or an empty database at ``--store-url``; rows
written straight with executemany: one attempt per line, spread over an hour, 1 % failed, 2 %
with a 429 first, one in 10,000 sent with no answer, two providers), then times the reads the
pages make: the jobs page (100 jobs), the job page's first look (its attempts summed once) and
its next looks (only attempts after the last settled id), and the usage page over HTTP (its
first look folds every call into the store's rollup; later looks read the rollup and the calls
of the last minutes: 1,000 calls made just before are added for them). ``--walk`` also times
``batcher usage --by day``, which walks every call. Prints a table and the command.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from batcher.dashboard.board import Board
from batcher.usage import usage_report
from jobs.db import Store
from jobs.settings import load_settings
from jobs.store.common import ATTEMPT_TABLE, JOB_TABLE, REQUEST_TABLE
from workers.prices import load_prices

START = datetime(2026, 5, 1, tzinfo=UTC)
CHUNK = 50_000


def build(store: Store, lines: int, jobs: int) -> int:
    """The store's rows; return the big job's id."""
    with store.engine.begin() as conn:
        rows = [_job(f"small{i}", 10) for i in range(jobs)]
        conn.execute(sa.insert(JOB_TABLE), rows)
        big = conn.execute(sa.insert(JOB_TABLE).values(**_job("big", lines))).inserted_primary_key[0]
    for start in range(0, lines, CHUNK):
        with store.engine.begin() as conn:
            n = range(start, min(lines, start + CHUNK))
            conn.execute(sa.insert(REQUEST_TABLE), [_line(big, i) for i in n])
            where = (REQUEST_TABLE.c.job_id == big, REQUEST_TABLE.c.line_no == start + 1)
            first = conn.execute(sa.select(REQUEST_TABLE.c.id).where(*where)).scalar_one()
            attempts = [a for i in n for a in _attempts(big, first + i - start, i)]
            conn.execute(sa.insert(ATTEMPT_TABLE), attempts)
    return int(big)


def _job(name: str, total: int) -> dict[str, Any]:
    return {
        "name": name, "source_path": "/b", "source_sha256": name, "status": "running", "mode": "embedded",
        "priority": 5, "total": total, "succeeded": total - total // 100, "failed": total // 100,
        "cancelled": 0, "options": "{}", "created_at": START,
    }  # fmt: skip


def _line(job: int, i: int) -> dict[str, Any]:
    failed = i % 100 == 0
    return {
        "job_id": job, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini", "body": "{}", "est_tokens": 10, "state": "failed" if failed else "succeeded",
        "attempts": 1, "claims": 1, "usage_estimated": False, "prompt_tokens": None if failed else 10,
        "completion_tokens": None if failed else 5, "total_tokens": None if failed else 15,
        "error_code": "bad" if failed else None, "last_error": "bad line" if failed else None,
    }  # fmt: skip


def _attempts(job: int, request_id: int, i: int) -> list[dict[str, Any]]:
    at = START + timedelta(seconds=i * 3600 / 1_000_000)
    ok = i % 100 != 0
    base = {"request_id": request_id, "job_id": job, "attempt_no": 1, "started_at": at, "duration_ms": 50,
            "sent": True, "usage_estimated": False}  # fmt: skip
    out = []
    route = {"provider": "relay-a/KEY_A …1a2b" if i % 2 else "relay-b/KEY_B …9z9z"}
    base |= route
    if i % 10_000 == 5:  # sent, no answer: the report's unknown kind, read line by line
        out.append(
            base | {"status_code": None, "outcome": "error", "error_class": "timeout", "call_id": f"u{i}"}
        )
    if i % 50 == 0:
        out.append(base | {"status_code": 429, "outcome": "rate_limited", "error_class": "rate_limited",
                           "call_id": f"t{i}"})  # fmt: skip
    out.append(base | {"status_code": 200 if ok else 400, "outcome": "ok" if ok else "error",
                       "error_class": "" if ok else "bad_request", "call_id": f"c{i}",
                       "prompt_tokens": 10 if ok else None, "completion_tokens": 5 if ok else None,
                       "total_tokens": 15 if ok else None})  # fmt: skip
    return out


def add_recent(store: Store, job: int, calls: int) -> None:
    """Calls made just now (the usage page reads them live, past the rollup)."""
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.min(REQUEST_TABLE.c.id)).where(REQUEST_TABLE.c.job_id == job))
        request_id = int(first.scalar_one())
        rows = [
            a | {"started_at": now, "call_id": f"r{i}"}
            for i in range(calls)
            for a in _attempts(job, request_id, 1)
        ]
        conn.execute(sa.insert(ATTEMPT_TABLE), rows)


def usage_page(client: Any) -> None:
    """One look at the usage page, its report computed (not the page's 30-second copy)."""
    client.app_state["reports"]._cache.clear()
    response = client.get("/usage")
    assert response.status_code == 200 and "relay-a" in response.text, response.text[:300]


def timed(what: str, action: Callable[[], object], table: list[tuple[str, float]]) -> None:
    start = time.perf_counter()
    action()
    table.append((what, time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--store-url", help="an empty database to fill (default: SQLite in a temporary folder)"
    )
    parser.add_argument("--walk", action="store_true", help="also time the report that walks every call")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batcher-dash-bench-"))
    store = Store(args.store_url or f"sqlite:///{folder / 'store.db'}")
    table: list[tuple[str, float]] = []
    holder: dict[str, int] = {}
    timed(f"build the store ({args.lines:,} lines, {args.jobs:,} jobs)",
          lambda: holder.update(big=build(store, args.lines, args.jobs)), table)  # fmt: skip
    board, big = Board(store, load_settings()), holder["big"]
    timed("jobs page, first look (100 jobs)", lambda: board.jobs(limit=100), table)
    timed("jobs page, next look", lambda: board.jobs(limit=100), table)
    timed("job page, first look (attempts summed once)", lambda: board.job(big), table)
    for n in (2, 3):
        timed(f"job page, look {n} (attempts after the settled id)", lambda: board.job(big), table)
    client = _client(store)
    timed("usage page, first look (every call folded into the rollup)", lambda: usage_page(client), table)
    add_recent(store, big, 1000)
    for n in (2, 3):
        timed(f"usage page, look {n} (rollup + 1,000 recent calls)", lambda: usage_page(client), table)
    if args.walk:
        walk = lambda: usage_report(store, None, by=("day",), prices=load_prices([]))  # noqa: E731
        timed("batcher usage --by day (walks every call)", walk, table)
    print(f"python -m benchmarks.dashboard --lines {args.lines} --jobs {args.jobs}" + " --walk" * args.walk)
    for what, seconds in table:
        print(f"{what:<60} {seconds * 1000:>10.0f} ms")
    store.close()


def _client(store: Store) -> Any:
    from starlette.testclient import TestClient

    from batcher.dashboard.app import build_app
    from batcher.dashboard.guard import Access

    app = build_app(store, load_settings(), Access(None))
    client = TestClient(app, base_url="http://127.0.0.1:8770")
    client.app_state = {"reports": _reports(app)}  # type: ignore[attr-defined]
    return client


def _reports(app: Any) -> Any:
    """The app's report keeper (its handlers' ``UsageReports``), to clear its 30-second copy."""
    for route in app.routes:
        handler = getattr(getattr(route, "endpoint", None), "__self__", None)
        if handler is not None and hasattr(handler, "reports"):
            return handler.reports
    raise RuntimeError("the dashboard has no usage reports")


if __name__ == "__main__":
    main()
