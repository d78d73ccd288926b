"""The execution core against a scripted API (httpx.MockTransport) and a real SQLite store."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlmodel import select

from jobs import store as q
from jobs.db import Store
from jobs.models import Attempt, JobStatus, Request
from workers.client import ApiClient, ClientConfig
from workers.executor import ExecConfig, Executor
from workers.ratelimit import InProcessLimiter, Limits, PaceView, Permit
from workers.sink import StoreSink

KEY = "sk-canary-0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'exec.db'}") as store:
        yield store


def add_job(db: Store, endpoint: str, bodies: list[dict[str, object]]) -> int:
    with db.session() as s:
        job = q.create_job(s, name="t", source_path="/t", source_sha256="x")
        assert job.id is not None
        q.insert_requests(
            s,
            [
                {
                    "job_id": job.id,
                    "custom_id": f"c{i}",
                    "line_no": i,
                    "endpoint": endpoint,
                    "model": "m",
                    "body": orjson.dumps(b).decode(),
                    "est_tokens": 10,
                    "state": "pending",
                    "attempts": 0,
                    "claims": 0,
                    "usage_estimated": False,
                }
                for i, b in enumerate(bodies, start=1)
            ],
        )
        job.total = len(bodies)
        q.start_job(s, job.id)
        return job.id


class RecordingLimiter(InProcessLimiter):
    def __init__(self) -> None:
        super().__init__(Limits())
        self.cooldowns: list[tuple[str, float | None]] = []
        self.settled: list[tuple[Permit, int]] = []
        self.full: list[bool] = []

    async def limited(self, key: str, pause: float | None) -> None:
        self.cooldowns.append((key, pause))

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        self.settled.append((permit, used_tokens))
        if ok:
            self.full.append(window_full)


async def run(
    db: Store,
    job_id: int,
    handler: Handler,
    tmp_path: Path,
    *,
    max_attempts: int = 4,
    concurrency: int = 4,
    max_wait: float | None = 3600.0,
    limiter: RecordingLimiter | None = None,
    control_interval: float = 0.5,
) -> tuple[Executor, RecordingLimiter]:
    config = ExecConfig(
        results_dir=tmp_path / "results",
        concurrency=concurrency,
        max_attempts=max_attempts,
        max_wait=max_wait,
        control_interval=control_interval,
    )
    limiter = limiter or RecordingLimiter()

    async def no_sleep(_: float) -> None:
        return None

    client = ApiClient(ClientConfig("https://relay.test/v1", KEY), transport=httpx.MockTransport(handler))
    sink = StoreSink(db, job_id=job_id, owner=config.owner)
    executor = Executor(
        client=client,
        limiter=limiter,
        sink=sink,
        config=config,
        secrets=[KEY],
        jitter=lambda: 0.0,
        sleep=no_sleep,
    )
    with db.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner=config.owner, lease_seconds=60)
    async with client:
        await executor.run(items)
    return executor, limiter


def scripted(*responses: httpx.Response) -> Handler:
    """Answer each body with the next response of its own script; the last one repeats."""
    calls: dict[bytes, int] = defaultdict(int)

    def handler(request: httpx.Request) -> httpx.Response:
        n = calls[request.content]
        calls[request.content] += 1
        return responses[min(n, len(responses) - 1)]

    return handler


def chat_ok(content: str = "hi", usage: bool = True) -> httpx.Response:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return httpx.Response(200, json=body, headers={"x-request-id": "req-1"})


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


def lines(db: Store, job_id: int) -> list[Request]:
    with db.session() as s:
        return list(q.iter_lines(s, job_id))


def attempts(db: Store) -> list[Attempt]:
    from sqlmodel import select

    with db.session() as s:
        return list(s.exec(select(Attempt).order_by(Attempt.id)))


class SwallowingLimiter(RecordingLimiter):
    """A limiter whose pace read hangs until cancelled and then swallows the cancel, as a Redis
    client once did under a worker: the worker's chunk never returned. Calls go only once the
    control loop is inside such a read, so the run ends with it there."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()

    def granted_now(self, key: str, tokens: int) -> Permit | None:
        return None  # every call goes through acquire

    async def acquire(self, key: str, tokens: int) -> Permit:
        await self.reading.wait()
        return await super().acquire(key, tokens)

    async def pace(self, key: str) -> PaceView:
        self.reading.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return await super().pace(key)


def test_a_flush_carries_several_packed_calls_by_default(tmp_path: Path) -> None:
    """One transaction per packed call (257 records) cost its lines more than their writes."""
    config = ExecConfig(results_dir=tmp_path)
    assert config.pack is not None and config.flush_size >= 4 * (config.pack.max_inputs + 1)


async def test_the_run_ends_even_if_the_control_loop_swallows_its_cancel(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT] * 3)
    run_ = run(db, job_id, scripted(chat_ok()), tmp_path, limiter=SwallowingLimiter(), control_interval=0)
    executor, _ = await asyncio.wait_for(run_, timeout=60)
    assert executor.stats.succeeded == 3


async def test_executor_retries_transient_then_records_success_and_every_attempt(
    db: Store, tmp_path: Path
) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    handler = scripted(httpx.Response(503, text="busy"), httpx.Response(200, content=b'{"trunc'), chat_ok())
    executor, _ = await run(db, job_id, handler, tmp_path)
    [line] = lines(db, job_id)
    assert (line.state, line.attempts, line.total_tokens, line.upstream_request_id) == (
        "succeeded",
        3,
        10,
        "req-1",
    )
    assert orjson.loads(line.response_body or "")["choices"][0]["message"]["content"] == "hi"
    assert [(a.outcome, a.error_class) for a in attempts(db)] == [
        ("retry", "server_error"),
        ("retry", "bad_body"),
        ("ok", "ok"),
    ]
    assert executor.stats.succeeded == 1
    with db.session() as s:
        assert q.get_job(s, job_id).status == JobStatus.COMPLETED


async def test_executor_permanent_error_fails_line_once_with_message(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    error = {
        "error": {"message": f"bad request for key {KEY}", "type": "invalid_request_error", "code": "bad"}
    }
    await run(db, job_id, scripted(httpx.Response(400, json=error)), tmp_path)
    [line] = lines(db, job_id)
    assert (line.state, line.status_code, line.attempts) == ("failed", 400, 1)
    assert "bad request" in (line.last_error or "")
    assert KEY not in (line.last_error or "") + (line.response_body or "")
    assert KEY not in (attempts(db)[0].error_message or "")


async def test_executor_gives_up_at_the_attempt_cap(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    await run(db, job_id, scripted(httpx.Response(500, text="oops")), tmp_path, max_attempts=3)
    [line] = lines(db, job_id)
    assert (line.state, line.attempts) == ("failed", 3)
    assert len(attempts(db)) == 3


async def test_executor_fatal_answer_stops_job_and_releases_lines(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT | {"n": i} for i in range(5)])
    body = {"error": {"message": "无效的令牌", "type": "one_api_error", "code": "invalid_token"}}
    executor, _ = await run(db, job_id, scripted(httpx.Response(401, json=body)), tmp_path, concurrency=1)
    with db.session() as s:
        job = q.get_job(s, job_id)
        counts = q.state_counts(s, job_id)
    assert job.status == JobStatus.STOPPED
    assert "无效的令牌" in (job.last_error or "")
    assert counts["pending"] == 5  # nothing burned: every line is still to do
    assert executor.stats.calls == 1


async def test_executor_retry_after_pauses_the_limiter_key(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    handler = scripted(httpx.Response(429, headers={"retry-after-ms": "1500"}), chat_ok())
    _, limiter = await run(db, job_id, handler, tmp_path)
    assert limiter.cooldowns == [("relay.test|m", 1.5)]
    assert lines(db, job_id)[0].state == "succeeded"


RATE_429 = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
OVERLOAD_503 = {
    "error": {
        "message": "当前分组上游负载已饱和，请稍后再试",
        "type": "new_api_error",
        "code": "upstream_overloaded",
    }
}


@pytest.mark.parametrize(
    "throttle",
    [
        httpx.Response(429, json=RATE_429),
        httpx.Response(503, json=OVERLOAD_503, headers={"retry-after": "1"}),
        httpx.Response(200, json=OVERLOAD_503),  # an overload inside HTTP 200
    ],
)
async def test_executor_throttles_never_use_up_max_attempts(
    db: Store, tmp_path: Path, throttle: httpx.Response
) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    handler = scripted(*([throttle] * 8), httpx.Response(500), chat_ok())
    executor, _ = await run(db, job_id, handler, tmp_path, max_attempts=2)
    line = lines(db, job_id)[0]
    assert line.state == "succeeded"
    assert executor.stats.calls == 10
    assert line.attempts == 2  # the 500 and the success; the eight throttles are not counted
    with db.session() as s:
        rows = s.exec(select(Attempt).where(Attempt.request_id == line.id)).all()
    assert len(rows) == 10  # every call is still an attempt row: each may be billed


async def test_executor_a_line_throttled_past_max_wait_fails_saying_so(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    executor, _ = await run(db, job_id, scripted(httpx.Response(429, json=RATE_429)), tmp_path, max_wait=0.0)
    line = lines(db, job_id)[0]
    assert line.state == "failed"
    assert line.error_code == "rate_limit_exceeded"
    assert "--max-wait" in (line.last_error or "")
    assert "Rate limit reached" in (line.last_error or "")
    assert executor.pacing.counters.rate_limited == 1


async def test_executor_retry_after_wins_over_a_full_windows_reset(db: Store, tmp_path: Path) -> None:
    """llmock's 429: retry-after-ms 12 with remaining 0 and a 59.5 s reset. The wait is 12 ms."""
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    headers = {
        "retry-after-ms": "12",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59.5s",
    }
    _, limiter = await run(
        db, job_id, scripted(httpx.Response(429, json=RATE_429, headers=headers), chat_ok()), tmp_path
    )
    assert limiter.cooldowns == [("relay.test|m", 0.012)]


async def test_executor_without_retry_after_a_429_waits_for_the_window(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    handler = scripted(httpx.Response(429, json=RATE_429, headers=headers), httpx.Response(429), chat_ok())
    _, limiter = await run(db, job_id, handler, tmp_path)
    assert limiter.cooldowns == [("relay.test|m", 2.0), ("relay.test|m", None)]


async def test_executor_a_full_window_on_success_holds_the_pace_without_a_pause(
    db: Store, tmp_path: Path
) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    ok = chat_ok()
    ok.headers.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"})
    _, limiter = await run(db, job_id, scripted(ok), tmp_path)
    assert limiter.cooldowns == []
    assert limiter.full == [True]


async def test_executor_overload_lowers_the_concurrency(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    handler = scripted(httpx.Response(503, json=OVERLOAD_503), chat_ok())
    executor, limiter = await run(db, job_id, handler, tmp_path, concurrency=64)
    assert executor.pacing.concurrency.decreases == 1
    assert not executor.pacing.concurrency.slow_start
    assert executor.pacing.counters.overloaded == 1
    assert limiter.cooldowns == []  # an overload is not a rate limit: the key is not paused


async def test_executor_settles_tokens_with_reported_usage(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    _, limiter = await run(db, job_id, scripted(chat_ok()), tmp_path)
    assert [(p.tokens, used) for p, used in limiter.settled] == [(10, 10)]


async def test_executor_missing_usage_is_estimated_and_flagged(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    await run(db, job_id, scripted(chat_ok("four words right here", usage=False)), tmp_path)
    [line] = lines(db, job_id)
    assert line.usage_estimated
    assert line.prompt_tokens and line.prompt_tokens > 0
    assert line.completion_tokens and line.completion_tokens > 0


async def test_executor_stores_base64_embeddings_as_their_bytes(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/embeddings", [{"model": "m", "input": "x", "encoding_format": "base64"}])
    raw = struct.pack("<3f", 0.5, -0.25, 1.0)
    answer = {
        "data": [{"index": 0, "embedding": base64.b64encode(raw).decode()}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    await run(db, job_id, scripted(httpx.Response(200, json=answer)), tmp_path)
    with db.session() as s:
        [line] = list(q.iter_results(s, job_id))
    assert line.vectors is not None
    assert (line.vectors.data, line.vectors.dim, line.vectors.encoding) == (raw, 3, "base64")
    assert orjson.loads(line.response_body or "")["data"] == [{"index": 0}]


async def test_executor_stores_float_embeddings_as_float32(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/embeddings", [{"model": "m", "input": "x"}])
    answer = {"data": [{"index": 0, "embedding": [0.5, -0.25, 1.0]}], "usage": {"prompt_tokens": 1}}
    await run(db, job_id, scripted(httpx.Response(200, json=answer)), tmp_path)
    with db.session() as s:
        [line] = list(q.iter_results(s, job_id))
    assert line.vectors is not None
    assert line.vectors.data == struct.pack("<3f", 0.5, -0.25, 1.0)
    assert "embedding" not in (line.response_body or "")


async def test_executor_saves_speech_audio_to_a_file(db: Store, tmp_path: Path) -> None:
    job_id = add_job(
        db,
        "/v1/audio/speech",
        [{"model": "tts", "input": "你好 world", "voice": "alloy", "response_format": "wav"}],
    )
    audio = httpx.Response(200, content=b"RIFF....WAVE", headers={"content-type": "audio/wav"})
    await run(db, job_id, scripted(audio), tmp_path)
    [line] = lines(db, job_id)
    assert (line.state, line.audio_format, line.audio_bytes, line.characters) == ("succeeded", "wav", 12, 8)
    assert Path(line.audio_path or "").read_bytes() == b"RIFF....WAVE"


async def test_executor_stops_new_calls_when_job_is_paused(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT | {"n": i} for i in range(3)])
    with db.session() as s:
        q.set_job_status(s, q.get_job(s, job_id), JobStatus.PAUSED)
    config = ExecConfig(results_dir=tmp_path, concurrency=1)
    sink = StoreSink(db, job_id=job_id, owner=config.owner)
    with db.session() as s:
        q.start_job(s, job_id)
        items = q.claim_lines(s, job_id=job_id, owner=config.owner, lease_seconds=60)
        q.set_job_status(s, q.get_job(s, job_id), JobStatus.PAUSED)
    client = ApiClient(
        ClientConfig("https://relay.test/v1", KEY), transport=httpx.MockTransport(scripted(chat_ok()))
    )
    executor = Executor(client=client, limiter=InProcessLimiter(Limits()), sink=sink, config=config)
    executor.stats.halted = sink.halt_reason()
    async with client:
        await executor.run(items)
    with db.session() as s:
        assert q.state_counts(s, job_id)["pending"] == 3
    assert executor.stats.calls == 0


class DeadLimiter(InProcessLimiter):
    def granted_now(self, key: str, tokens: int) -> Permit | None:
        return None  # every call goes through acquire

    async def acquire(self, key: str, tokens: int) -> Permit:
        from jobs.errors import LimiterError

        raise LimiterError("the shared rate limiter's Redis cannot be reached; no call is made without it")


async def test_executor_fails_closed_when_the_limiter_is_unreachable(db: Store, tmp_path: Path) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT | {"n": i} for i in range(4)])
    config = ExecConfig(results_dir=tmp_path, concurrency=2)
    sink = StoreSink(db, job_id=job_id, owner=config.owner)
    with db.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner=config.owner, lease_seconds=60)
    client = ApiClient(
        ClientConfig("https://relay.test/v1", KEY), transport=httpx.MockTransport(scripted(chat_ok()))
    )
    executor = Executor(client=client, limiter=DeadLimiter(Limits()), sink=sink, config=config)
    async with client:
        stats = await executor.run(items)
    assert stats.calls == 0
    assert "no call is made" in (stats.halted or "")
    with db.session() as s:
        assert q.state_counts(s, job_id)["pending"] == 4  # given back, to run when Redis is back
