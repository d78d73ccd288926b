"""The asyncio execution core: run a stream of claimed lines against the API and record everything.

The caller decides where lines come from (the embedded runner claims them from the store in line
order; a Celery task claims the ids in its message) and passes a ``Sink`` that writes to the store.
The core owns what happens between:

- at most ``concurrency`` calls in flight, each after the rate limiter granted its place;
- retries with the pure policy in ``workers.retry``; a line waiting to retry gives up its call
  slot, so backoff never idles the pipe; Retry-After also pauses the limiter key for everyone;
- one ``Attempt`` per upstream call and one terminal result per line, buffered and flushed in
  batches (every ``flush_interval`` or ``flush_size`` records) so a crash loses only what was in
  flight, without a transaction per call;
- leases renewed while lines run; lines it will not finish (paused, cancelled, stopped) released;
- a FATAL answer (bad key, no quota) stops the job instead of burning every remaining line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from jobs.endpoints import Endpoint
from jobs.models import RequestState, utcnow
from jobs.records import AttemptRecord, LineResult, Usage, WorkItem
from workers.client import ApiClient, RawResponse
from workers.leases import new_owner
from workers.ratelimit import Limiter, Permit, header_pause
from workers.redact import redact
from workers.responses import parse_json_answer, request_id_of, speech_format, speech_usage
from workers.retry import Classification, Verdict, classify_exception, classify_response, next_delay

MAX_ERROR_BODY = 20_000


@dataclass(frozen=True)
class ExecConfig:
    """How the core runs lines."""

    results_dir: Path
    concurrency: int = 32
    max_attempts: int = 5
    lease_seconds: float = 300.0
    flush_size: int = 200
    flush_interval: float = 0.25
    control_interval: float = 1.0
    owner: str = field(default_factory=new_owner)


class Sink(Protocol):
    """The store as the core sees it; called from a worker thread, never on the event loop."""

    def write(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        """Record attempts and terminal results in one transaction."""
        ...

    def renew(self, request_ids: Sequence[int], until: float) -> None:
        """Extend the leases on lines still running."""
        ...

    def release(self, request_ids: Sequence[int]) -> None:
        """Give back lines the core will not finish."""
        ...

    def halt_reason(self) -> str | None:
        """Why the core should start no new call (job paused, cancelled, stopped), or None."""
        ...

    def stop_job(self, message: str) -> None:
        """Stop the job: the API refused it as a whole."""
        ...


@dataclass
class Stats:
    """Live counters of one run, read by progress displays."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    released: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    halted: str | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    """One finished upstream call."""

    classification: Classification
    response: RawResponse | None
    started_at: Any
    duration_ms: int


class Executor:
    """Runs lines with a concurrency cap, a rate limiter and the retry policy; see module doc."""

    def __init__(
        self,
        *,
        client: ApiClient,
        limiter: Limiter,
        sink: Sink,
        config: ExecConfig,
        secrets: Sequence[str] = (),
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client, self.limiter, self.sink, self.config = client, limiter, sink, config
        self.stats = Stats()
        self._secrets = list(secrets)
        self._jitter = jitter
        self._sleep = sleep  # injectable so tests of retries do not wait for real backoff
        self._provider = client.config.provider
        self._calls = asyncio.Semaphore(config.concurrency)
        self._lines = asyncio.Semaphore(config.concurrency * 2)
        self._active: set[int] = set()
        self._attempts: list[AttemptRecord] = []
        self._results: list[LineResult] = []
        self._flush_now = asyncio.Event()
        self._closing = False

    @property
    def halted(self) -> str | None:
        """Why no new call starts, if so."""
        return self.stats.halted

    async def run(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Stats:
        """Run every line the source yields (until halted) and flush all records; return the stats."""
        flusher = asyncio.create_task(self._flusher())
        background = [asyncio.create_task(self._renewer()), asyncio.create_task(self._controller())]
        try:
            await self._feed(items)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._closing = True
            self._flush_now.set()
            await flusher  # the last flush; a store error surfaces here
        return self.stats

    async def _feed(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> None:
        running: set[asyncio.Task[None]] = set()
        async for item in _aiter(items):
            if self.halted:
                await self._release([item.request_id])
                continue
            await self._lines.acquire()
            task = asyncio.create_task(self._run_line(item))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _run_line(self, item: WorkItem) -> None:
        self._active.add(item.request_id)
        try:
            await self._line(item)
        finally:
            self._active.discard(item.request_id)
            self._lines.release()

    async def _line(self, item: WorkItem) -> None:
        endpoint = Endpoint(item.endpoint)
        request = orjson.loads(item.body)
        content = item.body.encode()
        attempt = item.attempts
        while True:
            if self.halted:
                await self._release([item.request_id])
                return
            if attempt >= self.config.max_attempts:
                self._fail_capped(item, attempt)
                return
            attempt += 1
            call = await self._call(item, endpoint, content)
            if await self._settle_call(item, endpoint, request, call, attempt):
                return
            self.stats.retries += 1
            await self._sleep(next_delay(call.classification, attempt, jitter=self._jitter()))

    async def _call(self, item: WorkItem, endpoint: Endpoint, content: bytes) -> _Call:
        async with self._calls:
            permit = await self.limiter.acquire(f"{self._provider}|{item.model}", item.est_tokens)
            self.stats.in_flight += 1
            started_at, start = utcnow(), time.monotonic()
            try:
                call = await self._send(endpoint, content, started_at, start)
            finally:
                self.stats.in_flight -= 1
        self.stats.calls += 1
        await self._after_call(permit, call)
        return call

    async def _send(self, endpoint: Endpoint, content: bytes, started_at: Any, start: float) -> _Call:
        try:
            response = await self.client.call(endpoint, content)
        except httpx.TransportError as exc:
            elapsed = int((time.monotonic() - start) * 1000)
            return _Call(classify_exception(exc), None, started_at, elapsed)
        elapsed = int((time.monotonic() - start) * 1000)
        c = classify_response(
            response.status,
            response.headers,
            response.content,
            now=time.time(),
            binary_ok=endpoint == Endpoint.SPEECH,
        )
        return _Call(c, response, started_at, elapsed)

    async def _after_call(self, permit: Permit, call: _Call) -> None:
        c = call.classification
        pause = header_pause(call.response.headers) if call.response is not None else None
        if pause is not None:
            await self.limiter.cooldown(permit.key, pause)
        if c.verdict == Verdict.OK:
            return  # settled with the real usage once the answer is parsed
        # The pause goes first: settling opens the limiter's probe gate, which must stay shut.
        if c.retry_after is not None or c.error_class == "rate_limited":
            pause = c.retry_after if c.retry_after is not None else next_delay(c, 1, jitter=self._jitter())
            await self.limiter.cooldown(permit.key, pause)
        # A refused call used nothing; a call that may have run upstream keeps its reservation.
        await self.limiter.settle(permit, permit.tokens if c.sent else 0)

    async def _settle_call(
        self, item: WorkItem, endpoint: Endpoint, request: dict[str, Any], call: _Call, attempt: int
    ) -> bool:
        """Record the attempt; write a terminal result if there is one. True when the line is done."""
        c = call.classification
        if c.verdict == Verdict.OK:
            result = await self._success(item, endpoint, request, call)
            self._record(self._attempt(item, call, attempt, usage=result.usage))
            self._finish(result)
            return True
        self._record(self._attempt(item, call, attempt))
        if c.verdict == Verdict.FATAL:
            await self._halt_job(c)
            await self._release([item.request_id])
            return True
        if c.verdict == Verdict.PERMANENT or attempt >= self.config.max_attempts:
            self._finish(self._failure(item, call))
            return True
        return False

    async def _success(
        self, item: WorkItem, endpoint: Endpoint, request: dict[str, Any], call: _Call
    ) -> LineResult:
        response = call.response
        assert response is not None  # an OK classification always has a response
        if endpoint == Endpoint.SPEECH:
            result = await self._speech_result(item, request, call)
        else:
            parsed = parse_json_answer(endpoint, request, response.content, response.headers)
            result = LineResult(
                request_id=item.request_id,
                job_id=item.job_id,
                state=RequestState.SUCCEEDED,
                status_code=response.status,
                response_body=parsed.body_json,
                upstream_request_id=parsed.request_id,
                usage=parsed.usage,
                latency_ms=call.duration_ms,
            )
        usage = result.usage or Usage()
        permit = Permit(f"{self._provider}|{item.model}", item.est_tokens)
        await self.limiter.settle(
            permit, usage.total_tokens if endpoint != Endpoint.SPEECH else item.est_tokens
        )
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        return result

    async def _speech_result(self, item: WorkItem, request: dict[str, Any], call: _Call) -> LineResult:
        response = call.response
        assert response is not None
        fmt = speech_format(request)
        path = self.config.results_dir / f"job-{item.job_id}" / f"{item.request_id}.{fmt}"
        await asyncio.to_thread(_write_atomically, path, response.content)
        return LineResult(
            request_id=item.request_id,
            job_id=item.job_id,
            state=RequestState.SUCCEEDED,
            status_code=response.status,
            audio_path=str(path),
            audio_bytes=len(response.content),
            audio_format=fmt,
            upstream_request_id=request_id_of(response.headers),
            usage=speech_usage(request),
            latency_ms=call.duration_ms,
        )

    def _failure(self, item: WorkItem, call: _Call) -> LineResult:
        c, response = call.classification, call.response
        return LineResult(
            request_id=item.request_id,
            job_id=item.job_id,
            state=RequestState.FAILED,
            status_code=response.status if response else None,
            response_body=self._error_body(response),
            upstream_request_id=request_id_of(response.headers) if response else None,
            error_code=c.code or c.error_class,
            error_message=self._clean(c.message),
        )

    def _error_body(self, response: RawResponse | None) -> str | None:
        if response is None or not response.content:
            return None
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
        return self._clean(orjson.dumps(body).decode()[:MAX_ERROR_BODY])

    def _fail_capped(self, item: WorkItem, attempts: int) -> None:
        self._finish(
            LineResult(
                request_id=item.request_id,
                job_id=item.job_id,
                state=RequestState.FAILED,
                error_code="max_attempts",
                error_message=f"gave up after {attempts} attempts (--max-attempts)",
            )
        )

    def _attempt(
        self, item: WorkItem, call: _Call, attempt: int, *, usage: Usage | None = None
    ) -> AttemptRecord:
        c, response = call.classification, call.response
        return AttemptRecord(
            request_id=item.request_id,
            job_id=item.job_id,
            attempt_no=attempt,
            started_at=call.started_at,
            duration_ms=call.duration_ms,
            status_code=response.status if response else None,
            outcome=c.verdict.value,
            error_class=c.error_class,
            error_message=None if c.verdict == Verdict.OK else self._clean(c.message),
            sent=c.sent is not False,
            usage=usage,
            upstream_request_id=request_id_of(response.headers) if response else None,
            worker=self.config.owner,
        )

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    async def _halt_job(self, c: Classification) -> None:
        if self.stats.halted:
            return
        message = self._clean(f"the API refused the job ({c.error_class}): {c.message}")
        self.stats.halted = message
        await asyncio.to_thread(self.sink.stop_job, message)

    # --- records, leases and control -------------------------------------------------------------

    def _record(self, attempt: AttemptRecord) -> None:
        self._attempts.append(attempt)
        self._maybe_flush()

    def _finish(self, result: LineResult) -> None:
        if result.state == RequestState.SUCCEEDED:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self._results.append(result)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._attempts) + len(self._results) >= self.config.flush_size:
            self._flush_now.set()

    async def _flush(self) -> None:
        attempts, results = self._attempts, self._results
        if not attempts and not results:
            return
        self._attempts, self._results = [], []
        await asyncio.to_thread(self.sink.write, attempts, results)

    async def _flusher(self) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), self.config.flush_interval)
                self._flush_now.clear()
                await self._flush()
            await self._flush()
        except Exception:
            # Calls whose results cannot be stored would be paid for and lost: stop starting them.
            self.stats.halted = "the store could not be written"
            raise

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            if self._active:
                until = time.time() + self.config.lease_seconds
                await asyncio.to_thread(self.sink.renew, sorted(self._active), until)

    async def _controller(self) -> None:
        while not self.stats.halted:
            await asyncio.sleep(self.config.control_interval)
            reason = await asyncio.to_thread(self.sink.halt_reason)
            if reason:
                self.stats.halted = reason

    async def _release(self, request_ids: Sequence[int]) -> None:
        self.stats.released += len(request_ids)
        await asyncio.to_thread(self.sink.release, list(request_ids))


async def _aiter(items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Any:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
