"""The asyncio execution core: run a stream of claimed lines against the API and record everything.

The caller decides where lines come from (the embedded runner claims them from the store in line
order; a Celery task claims the ids in its message) and passes a ``Sink`` that writes to the store.
The core owns what happens between:

- lines become units (``workers.units``): one line per call, or a pack of embedding lines;
- at most ``concurrency`` calls in flight, each after the rate limiter granted its place;
- retries with the pure policy in ``workers.retry``; a unit waiting to retry gives up its call
  slot, so backoff never idles the pipe; Retry-After also pauses the limiter key for everyone;
- a pack the API refuses as a whole is bisected until the bad input is alone;
- one ``Attempt`` per line per upstream call and one terminal result per line, buffered and
  flushed in batches (every ``flush_interval`` or ``flush_size`` records) so a crash loses only
  what was in flight, without a transaction per call;
- leases renewed while lines run; lines it will not finish (paused, cancelled, stopped) released;
- a FATAL answer (bad key, no quota) stops the job instead of burning every remaining line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import httpx

from jobs.errors import BatcherError
from jobs.models import RequestState, utcnow
from jobs.records import AttemptRecord, LineResult, WorkItem
from workers import outcomes
from workers.audio_check import classify_speech
from workers.blame import blames_the_call
from workers.budget import Budget
from workers.client import ApiClient, RawResponse
from workers.cost import CallUsage
from workers.leases import LIVE_OWNERS, new_owner
from workers.outcomes import Call
from workers.packing import PackLimits
from workers.ratelimit import Limiter, Permit, header_pause
from workers.redact import Redactor
from workers.responses import speech_format
from workers.retry import Classification, Verdict, classify_exception, classify_response, next_delay
from workers.units import Unit, units_from


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
    pack: PackLimits | None = field(default_factory=PackLimits)
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

    def pause_job(self, message: str) -> None:
        """Pause the job (its budget is reached)."""
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
        budget: Budget | None = None,
    ) -> None:
        self.client, self.limiter, self.sink, self.config = client, limiter, sink, config
        self.budget = budget
        self._call_usage: dict[str, CallUsage] = {}
        self.stats = Stats()
        self._clean = Redactor(secrets)
        self._jitter = jitter
        self._sleep = sleep  # injectable so tests of retries do not wait for real backoff
        self._provider = client.config.provider
        self._calls = asyncio.Semaphore(config.concurrency)
        self._units = asyncio.Semaphore(config.concurrency * 2)
        self._active: set[int] = set()
        self._attempts: list[AttemptRecord] = []
        self._results: list[LineResult] = []
        self._flush_now = asyncio.Event()
        self._closing = False
        self._failures: list[Exception] = []

    @property
    def halted(self) -> str | None:
        """Why no new call starts, if so."""
        return self.stats.halted

    async def run(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Stats:
        """Run every line the source yields (until halted) and flush all records; return the stats."""
        LIVE_OWNERS.add(self.config.owner)
        try:
            return await self._run(items)
        finally:
            LIVE_OWNERS.discard(self.config.owner)

    async def _run(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Stats:
        if self.budget is not None:
            await asyncio.to_thread(self.budget.refresh)
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
        async for unit in units_from(items, pack=self.config.pack):
            if self.halted:
                await self._release(unit.items)
                continue
            await self._units.acquire()
            task = asyncio.create_task(self._run_unit(unit))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        if self._failures:
            raise self._failures[0]

    async def _run_unit(self, unit: Unit) -> None:
        ids = [item.request_id for item in unit.items]
        self._active.update(ids)
        try:
            await self._unit(unit)
        except Exception as exc:
            # No line may be left claimed and forgotten: give them back, start no new call, and
            # (for a bug rather than an unreachable limiter) raise once the run has wound down.
            self.stats.halted = self.stats.halted or self._clean(str(exc) or type(exc).__name__)
            if not isinstance(exc, BatcherError):
                self._failures.append(exc)
            await self._release(unit.items)
        finally:
            self._active.difference_update(ids)
            self._units.release()

    async def _unit(self, unit: Unit) -> None:
        while True:
            if self.halted:
                await self._release(unit.items)
                return
            unit = self._drop_capped(unit)
            if not unit.items:
                return
            reserved = await self._budget_gate(unit)
            if reserved is None:
                await self._release(unit.items)
                return
            unit.attempts = [n + 1 for n in unit.attempts]
            call = await self._call(unit)
            done = await self._settle(unit, call)
            self._settle_budget(unit, call, reserved)
            if done:
                return
            self.stats.retries += 1
            await self._sleep(next_delay(call.classification, max(unit.attempts), jitter=self._jitter()))

    def _drop_capped(self, unit: Unit) -> Unit:
        """Fail lines whose attempts are used up (on earlier claims); keep the others."""
        keep = []
        for i, (item, attempts) in enumerate(zip(unit.items, unit.attempts, strict=True)):
            if attempts >= self.config.max_attempts:
                self._finish(outcomes.capped(item, attempts))
            else:
                keep.append(i)
        return unit if len(keep) == len(unit.items) else unit.keep(keep)

    # --- the budget ----------------------------------------------------------------------------

    async def _budget_gate(self, unit: Unit) -> Decimal | None:
        """The cost reserved for the unit's call, or None when it would pass the budget (paused)."""
        if self.budget is None:
            return Decimal(0)
        amount = self.budget.estimate(unit.endpoint.value, unit.model, unit.requests)
        if self.budget.try_reserve(amount):
            return amount
        if not self.stats.halted:
            message = (
                f"budget reached: {self.budget.spent_text()}; raise it with "
                "`batcher resume JOB --budget USD` (workers) or `batcher run-job JOB --budget USD`"
            )
            self.stats.halted = message
            await asyncio.to_thread(self.sink.pause_job, message)
        return None

    def _settle_budget(self, unit: Unit, call: Call, reserved: Decimal) -> None:
        if self.budget is None:
            return
        usage = self._call_usage.pop(call.call_id, None)
        if usage is not None:
            spent = self.budget.cost(unit.model, usage)
        else:  # no answer to bill; one that may have run upstream counts as its estimate
            spent = reserved if call.response is None and call.classification.sent else Decimal(0)
        self.budget.settle(reserved, spent)

    # --- one call ------------------------------------------------------------------------------

    async def _call(self, unit: Unit) -> Call:
        content = unit.content()
        async with self._calls:
            permit = await self.limiter.acquire(f"{self._provider}|{unit.model}", unit.est_tokens)
            self.stats.in_flight += 1
            try:
                call = await self._send(unit, content)
            finally:
                self.stats.in_flight -= 1
        self.stats.calls += 1
        await self._after_call(permit, call)
        return call

    async def _send(self, unit: Unit, content: bytes) -> Call:
        started_at, start = utcnow(), time.monotonic()
        try:
            response = await self.client.call(unit.endpoint, content)
        except httpx.TransportError as exc:
            return Call(classify_exception(exc), None, started_at, _ms_since(start))
        cleaned = self._clean.body(response.content)  # relay-supplied text is scrubbed before it is kept
        if cleaned is not response.content:
            response = replace(response, content=cleaned)
        return Call(self._classify(unit, response), response, started_at, _ms_since(start))

    def _classify(self, unit: Unit, response: RawResponse) -> Classification:
        status, headers, body, now = response.status, response.headers, response.content, time.time()
        if outcomes.is_speech(unit):
            return classify_speech(status, headers, body, fmt=speech_format(unit.requests[0]), now=now)
        return classify_response(status, headers, body, now=now)

    async def _after_call(self, permit: Permit, call: Call) -> None:
        c = call.classification
        pause = header_pause(call.response.headers) if call.response is not None else None
        if c.retry_after is not None or c.error_class == "rate_limited":
            pause = max(pause or 0.0, c.retry_after or next_delay(c, 1, jitter=self._jitter()))
        # The pause goes first: settling opens the limiter's probe gate, which must stay shut.
        if pause is not None:
            await self.limiter.cooldown(permit.key, pause)
        if c.verdict == Verdict.OK:
            return  # settled with the real usage once the answer is parsed
        # A refused call used nothing; a call that may have run upstream keeps its reservation.
        await self.limiter.settle(permit, permit.tokens if c.sent else 0)

    # --- what the call meant ---------------------------------------------------------------------

    async def _settle(self, unit: Unit, call: Call) -> bool:
        """Record attempts; write terminal results if any. True when the unit is done."""
        c = call.classification
        if c.verdict == Verdict.OK:
            return await self._succeed(unit, call)
        self._record_attempts(unit, call)
        if c.verdict == Verdict.FATAL:
            await self._halt_job(c)
            await self._release(unit.items)
            return True
        if c.verdict == Verdict.PERMANENT and unit.packed and not blames_the_call(c, _status(call)):
            # The pack was refused, not a line: the halves keep their attempt budget.
            unit.attempts = [n - 1 for n in unit.attempts]
            await asyncio.gather(*(self._unit(half) for half in unit.halves()))
            return True
        if c.verdict == Verdict.PERMANENT or max(unit.attempts) >= self.config.max_attempts:
            for item in unit.items:
                self._finish(outcomes.failure(item, call, self._clean))
            return True
        return False

    async def _succeed(self, unit: Unit, call: Call) -> bool:
        try:
            results = await self._results_of(unit, call)
        except ValueError as exc:  # a packed answer that does not split back: retry it
            bad = Classification(
                verdict=Verdict.RETRY,
                error_class="bad_body",
                message=self._clean(str(exc)),
                code=None,
                retry_after=None,
                sent=True,
            )
            self._record_attempts(
                unit, Call(bad, call.response, call.started_at, call.duration_ms, call.call_id)
            )
            return False
        for item, result, attempt in zip(unit.items, results, unit.attempts, strict=True):
            self._record(self._attempt(item, call, attempt, result))
            self._finish(result)
        self._call_usage[call.call_id] = _call_usage(results)
        used = sum((r.usage.total_tokens if r.usage else 0) for r in results)
        reserved = Permit(f"{self._provider}|{unit.model}", unit.est_tokens)
        await self.limiter.settle(reserved, unit.est_tokens if outcomes.is_speech(unit) else used)
        return True

    async def _results_of(self, unit: Unit, call: Call) -> list[LineResult]:
        if not outcomes.is_speech(unit):
            return outcomes.json_results(unit, call, self._clean)
        item, request = unit.items[0], unit.requests[0]
        path = outcomes.audio_path(self.config.results_dir, item, request)
        assert call.response is not None
        await asyncio.to_thread(_write_atomically, path, call.response.content)
        return [outcomes.speech_result(item, request, call, path, self._clean)]

    def _record_attempts(self, unit: Unit, call: Call) -> None:
        for item, attempt in zip(unit.items, unit.attempts, strict=True):
            self._record(self._attempt(item, call, attempt, None))

    def _attempt(self, item: WorkItem, call: Call, attempt: int, result: LineResult | None) -> AttemptRecord:
        usage = result.usage if result is not None else None
        return outcomes.attempt_record(
            item, call, attempt, owner=self.config.owner, clean=self._clean, usage=usage
        )

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
            if result.usage is not None:
                self.stats.prompt_tokens += result.usage.prompt_tokens
                self.stats.completion_tokens += result.usage.completion_tokens
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
            if self.budget is not None:
                await asyncio.to_thread(self.budget.refresh)

    async def _release(self, items: Sequence[WorkItem]) -> None:
        self.stats.released += len(items)
        await asyncio.to_thread(self.sink.release, [item.request_id for item in items])


def _call_usage(results: Sequence[LineResult]) -> CallUsage:
    """What a whole call used: the sum of its lines' usage."""
    usages = [r.usage for r in results if r.usage is not None]
    return CallUsage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=sum(u.cached_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        characters=sum(u.characters for u in usages),
    )


def _status(call: Call) -> int | None:
    return call.response.status if call.response is not None else None


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
