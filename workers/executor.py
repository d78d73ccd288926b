"""The asyncio execution core: run a stream of claimed lines against the API and record everything.

The caller decides where lines come from (the embedded runner claims them from the store in line
order; a Celery task claims the ids in its message) and passes a ``Sink`` that writes to the store;
``workers.build.build_executor`` assembles one for a job. The core owns what happens between:

- lines become units (``workers.units``): one line per call, or a pack of embedding lines;
- each call goes when the pacing (``workers.pacing``: adaptive concurrency, rate limiter) lets it;
- retries with the pure policy in ``workers.retry``; a unit waiting to retry gives up its slot;
- a throttle (429, an overload) uses none of the line's attempts; it fails past ``max_wait``;
  a pack the API refuses as a whole is bisected until the bad input is alone; a route the relay
  answered 501 for fails the other lines of that route without a call;
- one ``Attempt`` per upstream call (per line when unanswered) and one result per line, handed to the
  recorder (``workers.recorder``), which writes them in batches and renews the leases; lines it
  will not finish (paused, cancelled, stopped) released; a FATAL answer (bad key, no quota)
  stops the job; a budget (``workers.budget``) pauses it before a call would pass it;
  lines with the same cache key share one call (``workers.cache.SharedCalls``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from jobs.blobs import BlobReader
from jobs.endpoints import Endpoint
from jobs.errors import BatcherError
from jobs.models import utcnow
from jobs.options import CacheMode
from jobs.records import AttemptRecord, LineResult, WorkItem
from workers import outcomes
from workers.answers import AnswerBudget, answer_bytes
from workers.audio_check import classify_answer
from workers.blame import blames_the_call
from workers.breaker import Breaker, JobGuard
from workers.budget import Budget, settle_call
from workers.cache import SharedCalls
from workers.callfiles import CallFiles
from workers.client import Caller, NoAnswer, RawResponse
from workers.endpoints.base import RequestContent
from workers.inhand import InHand
from workers.journal import Journal
from workers.leases import LIVE_OWNERS, new_owner
from workers.metrics import Observer
from workers.outcomes import Answered, Call, Exchange, status_of
from workers.pacing import Pacing, unless_stopped
from workers.packing import PackLimits
from workers.ratelimit import Limiter, Permit
from workers.recorder import Recorder, Sink
from workers.redact import Redactor
from workers.retry import (
    DEFAULT_MAX_WAIT_S,
    Classification,
    Verdict,
    next_delay,
    out_of_patience,
)
from workers.stats import Stats
from workers.units import Unit, units_from

__all__ = ["ExecConfig", "Executor", "Sink", "Stats"]


@dataclass(frozen=True)
class ExecConfig:
    """How the core runs lines."""

    results_dir: Path
    concurrency: int = 32  # the ceiling of calls in flight
    adaptive: bool = True  # find the concurrency under the ceiling; False: always the ceiling
    max_attempts: int = 5
    max_wait: float | None = DEFAULT_MAX_WAIT_S  # seconds a line may stay throttled
    lease_seconds: float = 300.0
    flush_size: int = 2048  # records: several packs of 257 a transaction, not one each (Performance 7)
    flush_interval: float = 0.25
    control_interval: float = 0.5  # a pause, cancel or spent budget stops new calls within 1 s
    pack: PackLimits | None = field(default_factory=PackLimits)
    cache: CacheMode = CacheMode.OFF  # which claimed lines the response cache answers (workers.cache)
    owner: str = field(default_factory=new_owner)


class Executor:
    """Runs lines with a concurrency cap, a rate limiter and the retry policy; see module doc."""

    def __init__(
        self,
        *,
        client: Caller,
        limiter: Limiter,
        sink: Sink,
        config: ExecConfig,
        secrets: Sequence[str] = (),
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: Budget | None = None,
        journal: Journal | None = None,
        blobs: BlobReader | None = None,  # reads the input files lines upload
        observer: Observer | None = None,  # the process's metrics (workers.metrics), when on
        pacing: Pacing | None = None,  # shared with other executors of the job (workers.runtime)
    ) -> None:
        self.client, self.sink, self.config, self.budget = client, sink, config, budget
        self.stats = Stats()
        self.pacing = pacing or Pacing(
            limiter, concurrency=config.concurrency, provider=client.config.provider, adaptive=config.adaptive
        )
        self.recorder = Recorder(
            sink,
            flush_size=config.flush_size,
            flush_interval=config.flush_interval,
            lease_seconds=config.lease_seconds,
            on_broken=self.halt,
            journal=journal,
            observer=observer,
        )
        self._clean = Redactor(secrets)
        self._shared = SharedCalls(finish=self._finish, hold=self.recorder.hold, let_go=self.recorder.let_go)
        breaker = Breaker(client.config.base_url)
        self._guard = JobGuard(breaker, stop=self._stop, release=self._release, finish=self._finish)
        self._jitter = jitter
        self._sleep = sleep  # injectable so tests of retries do not wait for real backoff
        self._answers = AnswerBudget()  # big answers and uploads take turns: memory stays flat
        self._files = CallFiles(config.results_dir, blobs, client.config)
        self._units = asyncio.Semaphore(config.concurrency * 2)
        per_call = config.pack.max_inputs if config.pack is not None else 1
        # Never fewer lines than the units above (lines one a call run as before); packs follow
        # the concurrency found.
        found = self.pacing.concurrency
        self._in_hand = InHand(lambda: 2 * max(config.concurrency, per_call * found.admitted))
        self._failures: list[Exception] = []
        self._unimplemented: dict[Endpoint, Call] = {}  # routes the relay answered 501 for
        self._halt_event = asyncio.Event()  # set with ``stats.halted``: ends every wait for a slot

    @property
    def halted(self) -> str | None:
        """Why no new call starts, if so."""
        return self.stats.halted

    def halt(self, reason: str) -> None:
        """Start no new call (the first reason stays); lines waiting for a slot give up at once."""
        self.stats.halted = self.stats.halted or reason
        self._halt_event.set()

    async def run(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Stats:
        """Run every line the source yields (until halted) and flush all records; return the stats."""
        LIVE_OWNERS.add(self.config.owner)
        try:
            return await self._run(items)
        finally:
            LIVE_OWNERS.discard(self.config.owner)
            await self._files.aclose()
            await asyncio.to_thread(self.sink.report_in_flight, None)

    async def _run(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> Stats:
        if self.budget is not None:
            await asyncio.to_thread(self.budget.refresh)
        await self._check_control()  # a chunk of a job paused since it was queued makes no call
        async with self.recorder:
            controller = asyncio.create_task(self._controller())
            try:
                await self._feed(items)
            finally:
                controller.cancel()
                await asyncio.gather(controller, return_exceptions=True)
            self._guard.close()
        return self.stats

    async def _feed(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> None:
        running: set[asyncio.Task[None]] = set()
        async for unit in units_from(self._shared.calls(self.recorder.holding(items)), pack=self.config.pack):
            if self.halted:
                await self._release(unit.items)
                continue
            await self._in_hand.take(len(unit.items))
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
        self.recorder.hold(ids)
        try:
            await self._unit(unit)
        except Exception as exc:
            # No line may be left claimed and forgotten: give them back, start no new call, and
            # (for a bug rather than an unreachable limiter) raise once the run has wound down.
            self.halt(self._clean(str(exc) or type(exc).__name__))
            if not isinstance(exc, BatcherError):
                self._failures.append(exc)
            await self._release(unit.items)
        finally:
            self.recorder.let_go(ids)
            self._units.release()
            await self._in_hand.give_back(len(ids))

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
            answered = await self._call(unit)
            settle_call(self.budget, unit.model, answered, reserved)
            if answered is None:  # halted while it waited for a slot: never sent
                await self._release(unit.items)
                return
            unit.attempts = [n + 1 for n in unit.attempts]
            c = answered.call.classification
            if not c.counts_attempt:
                unit.attempts = [n - 1 for n in unit.attempts]  # recorded as n+1, not counted
            if await self._settle(unit, answered):
                return
            self.stats.retries += 1
            self.recorder.retrying(unit.endpoint.path, unit.model)
            tries = unit.throttled(time.monotonic()) if c.throttle is not None else max(unit.attempts)
            await unless_stopped(self._sleep(next_delay(c, tries, jitter=self._jitter())), self._halt_event)

    def _drop_capped(self, unit: Unit) -> Unit:
        """Fail lines whose attempts are used up (on earlier claims) or whose route is a 501."""
        keep, refused = [], self._unimplemented.get(unit.endpoint)
        for i, (item, attempts) in enumerate(zip(unit.items, unit.attempts, strict=True)):
            if refused is not None:
                self._finish(outcomes.failure(item, refused, self._clean))
            elif attempts >= self.config.max_attempts:
                self._finish(outcomes.capped(item, attempts))
            else:
                keep.append(i)
        return unit if len(keep) == len(unit.items) else unit.keep(keep)

    async def _budget_gate(self, unit: Unit) -> Decimal | None:
        """The cost reserved for the unit's call, or None when it would pass the budget (paused)."""
        if self.budget is None:
            return Decimal(0)
        amount = self.budget.estimate(unit.endpoint, unit.model, unit.requests)
        if self.budget.try_reserve(amount):
            return amount
        if not self.stats.halted:
            message = self.budget.reached_text()
            self.halt(message)
            await asyncio.to_thread(self.sink.pause_job, message)
        return None

    # --- one call ------------------------------------------------------------------------------

    async def _call(self, unit: Unit) -> Answered | None:
        """One paced call for the unit, its answer parsed and the limiter settled; None if halted first.

        A good answer's place is let go as soon as it is back, and the loop yielded once, so a call
        handed the place sends before this answer is parsed and recorded (at the relay's cap, work
        inside a place is calls the relay does not get: about 1 ms of a 50 ms call). An error answer
        keeps its place until the pace has heard it: an overload's cut comes before anyone goes.
        """
        async with self._answers.hold(answer_bytes(unit)):
            request = await self._files.request(unit, unit.content())
            async with self.pacing.slot(unit.model, unit.est_tokens, stop=self._halt_event) as permit:
                if permit is None:  # the job stopped while this call waited its turn
                    return None
                sent = await self._send(unit, request, outcomes.new_call_id())
                if not (isinstance(sent.answer, RawResponse) and sent.answer.status < 400):
                    return await self._heard(unit, sent, permit, in_place=True)
                handed_on = self.pacing.queued  # the place goes to a call waiting for one
        if handed_on:
            await asyncio.sleep(0)
        return await self._heard(unit, sent, permit, in_place=False)

    async def _heard(self, unit: Unit, sent: Exchange, permit: Permit, *, in_place: bool) -> Answered:
        """The answer read and parsed, and the pace and the limiter told (``in_place``: from its place)."""
        self.stats.calls += 1
        answered = await self._parse(unit, self._read(unit, sent))
        used = outcomes.used_tokens(unit, answered)
        await self.pacing.finish(permit, answered.call, used_tokens=used, in_place=in_place)
        return answered

    async def _send(self, unit: Unit, request: RequestContent, call_id: str) -> Exchange:
        started_at, start = utcnow(), time.monotonic()
        self.recorder.sending(call_id, unit.items, unit.attempts, started_at)  # journaled before it leaves
        self.stats.in_flight += 1
        self.stats.lines_in_flight += len(unit.items)
        try:
            answer = await self.client.send(unit.endpoint, request, model=unit.items[0].model)
        finally:
            self.stats.in_flight -= 1
            self.stats.lines_in_flight -= len(unit.items)
        return Exchange(answer, call_id, started_at, int((time.monotonic() - start) * 1000), start)

    def _read(self, unit: Unit, sent: Exchange) -> Call:
        """What the answer says, its relay-supplied text scrubbed before it is kept."""
        answer = sent.answer
        if isinstance(answer, NoAnswer):
            return sent.call(answer.classification, None, route=answer.route)
        cleaned = self._clean.body(answer.content)
        if cleaned is not answer.content:
            answer = replace(answer, content=cleaned)
        return sent.call(classify_answer(unit, answer, now=time.time()), answer)

    async def _parse(self, unit: Unit, call: Call) -> Answered:
        """The lines' results of an OK answer; an answer that does not split back is retried."""
        if call.classification.verdict != Verdict.OK:
            return Answered(call)
        try:
            return Answered(call, await self._files.results(unit, call, self._clean))
        except ValueError as exc:  # a packed answer that does not split back: retry it
            bad = Classification(Verdict.RETRY, "bad_body", self._clean(str(exc)), sent=True)
            return Answered(replace(call, classification=bad))

    # --- what the call meant ---------------------------------------------------------------------

    async def _settle(self, unit: Unit, answered: Answered) -> bool:
        """Record attempts; write terminal results if any. True when the unit is done."""
        call = answered.call
        c = call.classification
        if answered.results is not None:
            self._guard.succeeded(unit, call)
            self._succeed(unit, call, answered.results)
            return True
        self.recorder.land(self._attempts(unit, call, None), [])  # no result yet
        if await self._guard.failed(unit, call):  # the breaker, or a FATAL answer: the job stops
            return True
        if c.verdict == Verdict.PERMANENT and unit.packed and not blames_the_call(c, status_of(call)):
            # The pack was refused, not a line: the halves keep their attempt budget.
            unit.attempts = [n - 1 for n in unit.attempts]
            await asyncio.gather(*(self._unit(half) for half in unit.halves()))
            return True
        if c.throttle is not None:
            return self._check_patience(unit, call)
        if c.error_class == "not_implemented":
            self._unimplemented[unit.endpoint] = call
        if c.verdict == Verdict.PERMANENT or max(unit.attempts) >= self.config.max_attempts:
            for item in unit.items:
                self._guard.fail(outcomes.failure(item, call, self._clean), item)
            return True
        return False

    def _check_patience(self, unit: Unit, call: Call) -> bool:
        """Fail the unit's lines if they have been throttled longer than ``max_wait``."""
        waited = unit.waited(time.monotonic())
        if not out_of_patience(waited, self.config.max_wait):
            return False
        for item in unit.items:
            self._finish(outcomes.out_of_patience(item, call, waited, self._clean))
        return True

    def _succeed(self, unit: Unit, call: Call, results: list[LineResult]) -> None:
        attempts = self._attempts(unit, call, results)
        for result in results:
            self.stats.count(result)
        self.recorder.land(attempts, results)  # a pack's lines: one journal entry, not one each
        for result in results:
            self._shared.settled(result)  # twins waiting for these lines take their copies

    def _attempts(self, unit: Unit, call: Call, results: list[LineResult] | None) -> list[AttemptRecord]:
        return outcomes.call_records(unit, call, results, owner=self.config.owner, clean=self._clean)

    async def _stop(self, message: str) -> None:
        if self.stats.halted:
            return
        message = self._clean(message)
        self.halt(message)
        await asyncio.to_thread(self.sink.stop_job, message)

    # --- results, control ------------------------------------------------------------------------

    def _finish(self, result: LineResult) -> None:
        self.stats.count(result)
        self.recorder.finish(result)
        self._shared.settled(result)  # its twins' copies come through here too

    async def _check_control(self) -> None:
        await asyncio.to_thread(self.sink.report_in_flight, self.stats.in_flight)  # for `status`
        if reason := await asyncio.to_thread(self.sink.halt_reason):
            self.halt(reason)

    async def _controller(self) -> None:
        me = asyncio.current_task()  # a cancel a library swallowed (a worker hung on it) still ends it
        while not self.stats.halted and not (me and me.cancelling()):
            await asyncio.sleep(self.config.control_interval)
            self.recorder.paced(await self.pacing.refresh(), self.pacing.concurrency.admitted)
            await self._check_control()
            if self.budget is not None:
                await asyncio.to_thread(self.budget.refresh)

    async def _release(self, items: Sequence[WorkItem]) -> None:
        items = self._shared.released(items)
        self.stats.released += len(items)
        await self.recorder.release([item.request_id for item in items])
