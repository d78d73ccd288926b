"""A worker process's runtime: its loop in a thread of its own, background runs, a job's pacing kept."""

from __future__ import annotations

import asyncio

from workers.ratelimit import InProcessLimiter, Limits
from workers.runtime import WorkerRuntime


def test_run_returns_and_start_runs_in_the_background_until_drained() -> None:
    runtime = WorkerRuntime("redis://127.0.0.1:1/0")  # never connected: no limiter asked for
    try:
        release = asyncio.Event()

        async def later() -> str:
            await release.wait()
            return "done"

        future = runtime.start(later())
        assert runtime.run(asyncio.sleep(0, "now")) == "now"  # the loop serves others meanwhile
        assert runtime.drain(0) == 1
        runtime.loop.call_soon_threadsafe(release.set)
        assert runtime.drain(10) == 0
        assert future.result() == "done"
    finally:
        runtime.close()


def test_a_jobs_chunks_share_one_pacing_until_its_limits_change() -> None:
    runtime = WorkerRuntime("redis://127.0.0.1:1/0")
    try:
        limiter = InProcessLimiter(Limits(rpm=600))
        first = runtime.pacing(1, limiter, concurrency=8, provider="relay")
        assert runtime.pacing(1, InProcessLimiter(Limits(rpm=600)), concurrency=8, provider="relay") is first
        assert runtime.pacing(2, limiter, concurrency=8, provider="relay") is not first
        assert (
            runtime.pacing(1, InProcessLimiter(Limits(rpm=60)), concurrency=8, provider="relay") is not first
        )
        assert runtime.pacing(1, limiter, concurrency=16, provider="relay") is not first
    finally:
        runtime.close()
