"""The task lifecycle of Midjourney, Suno and video lines: submit once, poll in batches, finish once.

A task line goes submitted → polling → succeeded / failed (``jobs.models.TaskState``):

- **Submit.** Inside the call's pacing slot (the same limiter as every call), a ``submitting``
  task row is committed, then the submit goes, then the relay's task id is committed. A row
  found ``submitting`` later (the process died between) is a submit whose outcome nobody knows:
  the line fails with ``workers.taskcalls.UNKNOWN_MESSAGE`` and is never sent again by itself.
  ``workers.taskcalls`` says what an answer means; a refusal for now is retried after a backoff
  (no more than ``max_attempts`` tries), a refusal for good fails the line.
- **Follow-ups.** A line with ``"after": ID, "button": LABEL`` waits until line ID succeeded,
  then submits with ``taskId`` (the origin's task) and the button's ``customId``; an origin that
  failed, or a button it does not have, fails the follow-up with the reason.
- **Polls.** Due tasks are polled in batches (the family's ``poll_batch``: MJ and Suno ask for
  50 ids a call, video one), each task no sooner than ``poll_interval`` after its last poll
  (new-api refreshes its rows every 15 s). A task still going past the relay's deadline (MJ 1 h,
  Suno and video 24 h) fails with that reason. A poll that gets no answer is tried next round.
- **MODAL.** A Midjourney task waiting for a modal (Inpaint, Custom Zoom) goes to
  ``/mj/submit/modal`` with the line's ``"modal"`` fields (``prompt``; ``maskBase64`` from the
  line), or fails saying what to add.
- **Finish.** A succeeded task's URLs are fetched into the job's results folder with
  ``download`` (``workers.taskresults``); result and attempt are written in one transaction with
  the task row's end, so a line has exactly one terminal result.

The engine holds its lines' leases and renews them; lines it does not finish (paused, cancelled)
go back with their task rows, and whoever claims them next polls the same task.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from jobs.blobs import BlobReader
from jobs.db import Store
from jobs.endpoints import Endpoint, relay_root
from jobs.models import ModalState, TaskState
from jobs.records import WorkItem
from jobs.store import tasks as tq
from workers.budget import Budget
from workers.client import ApiClient, NoAnswer, RawResponse
from workers.downloads import Downloader
from workers.endpoints import family_of
from workers.endpoints.taskfamily import Phase, SubmitCall, TaskFamily, TaskView
from workers.leases import LIVE_OWNERS
from workers.pacing import Pacing
from workers.redact import Redactor
from workers.sink import StoreSink
from workers.stats import Stats
from workers.taskbudget import TaskBudget
from workers.taskcalls import (
    UNKNOWN_CODE,
    UNKNOWN_MESSAGE,
    SubmitKind,
    SubmitOutcome,
    later_delay,
    submit_outcome,
)
from workers.taskends import TaskEnds
from workers.taskfollow import modal_body, stored_to_data_urls
from workers.tasklines import TaskConfig, TaskLine, poll_batches
from workers.taskresults import summary
from workers.taskrows import TaskRows, as_call, modal_route, poll_classification, with_changes

Clock = Callable[[], float]
SENDING = ModalState.SUBMITTING


class TaskEngine:
    """Runs claimed task lines through their lifecycle; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        client: ApiClient,
        pacing: Pacing,
        config: TaskConfig,
        job_id: int,
        blobs: BlobReader | None = None,
        downloader: Downloader | None = None,
        secrets: Sequence[str] = (),
        budget: Budget | None = None,
        clock: Clock = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store, self.client, self.pacing, self.config = store, client, pacing, config
        self.sink = StoreSink(store, job_id=job_id, owner=config.owner)
        self.rows = TaskRows(store, job_id)
        self.budget = TaskBudget(budget, in_flight=lambda: self.rows.in_flight(config.owner))
        self.job_id, self._blobs, self._clean = job_id, blobs, Redactor(secrets)
        fetcher = downloader or Downloader(base_url=client.config.base_url, key=client.config.api_key)
        self._clock, self._sleep, self._jitter = clock, sleep, jitter
        self.stats = Stats()
        self.lines: dict[str, TaskLine] = {}  # by custom_id
        self.ends = TaskEnds(
            rows=self.rows, budget=self.budget, stats=self.stats, downloader=fetcher, config=config,
            root=relay_root(client.config.base_url),
        )  # fmt: skip

    @property
    def downloader(self) -> Downloader:
        """What fetches the result files (its client is opened around a run)."""
        return self.ends.downloader

    @downloader.setter
    def downloader(self, value: Downloader) -> None:
        self.ends.downloader = value

    @property
    def halted(self) -> str | None:
        """Why no new call starts, if so."""
        return self.stats.halted

    # --- the loop --------------------------------------------------------------------------------

    async def run(self, items: Sequence[WorkItem]) -> Stats:
        """Take every claimed line to its end (or until the job halts); return the stats."""
        LIVE_OWNERS.add(self.config.owner)
        try:
            return await self._run(items)
        finally:
            LIVE_OWNERS.discard(self.config.owner)

    async def _run(self, items: Sequence[WorkItem]) -> Stats:
        await self._load(items)
        last_control = -1e18
        while (going := [line for line in self.lines.values() if not line.done]) and not self.halted:
            now = self._clock()
            if now - last_control >= self.config.control_interval:
                await self._control(going)
                last_control = now
                if self.halted:
                    break
            await asyncio.gather(*self._due(going, now))
            await self._sleep(self._wait(going, self._clock()))
        await self._release([line for line in self.lines.values() if not line.done])
        return self.stats

    async def step(self, items: Sequence[WorkItem]) -> dict[int, float]:
        """One pass for a worker's message: submit what may go, poll what is due, give the rest back.

        Returns when each line given back is due again (its next poll, or a submit's retry), for
        the caller to send a message at that time; nothing when the job halted.
        """
        LIVE_OWNERS.add(self.config.owner)
        try:
            await self._load(items)
            going = [line for line in self.lines.values() if not line.done]
            if going:
                await self._control(going)
            if going and not self.halted:
                await asyncio.gather(*self._due(going, self._clock()))
            left = [line for line in self.lines.values() if not line.done]
            now = self._clock()
            interval = self.config.poll_interval
            due = {line.item.request_id: max(now, line.due_at(now, interval)) for line in left}
            # A line waiting on a poll is claimed by every poll message: those claims are no crash.
            await asyncio.to_thread(self.rows.unclaim, [line.item.request_id for line in left])
            await self._release(left)
            return {} if self.halted else due
        finally:
            LIVE_OWNERS.discard(self.config.owner)

    def _due(self, going: list[TaskLine], now: float) -> list[Awaitable[None]]:
        work: list[Awaitable[None]] = [self._submit(x) for x in going if self._submit_due(x, now)]
        return work + [self._poll(batch) for batch in poll_batches(going, now)]

    def _submit_due(self, line: TaskLine, now: float) -> bool:
        return line.record is None and line.retry_at <= now and self._ready(line)

    def _wait(self, going: list[TaskLine], now: float) -> float:
        # A follow-up waiting for its origin wakes with the origin's poll, not before.
        times = [
            line.retry_at if line.record is None else line.record.next_poll_at
            for line in going
            if line.record is not None or self._ready(line)
        ]
        return max(0.0, min([self.config.control_interval, *(t - now for t in times)]))

    async def _load(self, items: Sequence[WorkItem]) -> None:
        records = await asyncio.to_thread(self.rows.read, [item.request_id for item in items])
        for item in items:
            family = family_of(item.endpoint)
            assert isinstance(family, TaskFamily)
            line = TaskLine(item, family, orjson.loads(item.body), records.get(item.request_id))
            self.lines[item.custom_id] = line
            record = line.record
            if record is not None and (record.relay_task_id is None or record.modal is SENDING):
                await self._unknown(line, None)  # died between a submit (or its modal step) and its answer
            elif line.record is not None:
                self.budget.hold(item.request_id, item.endpoint, item.model, line.body)
                if line.record.modal is ModalState.TAKEN:
                    self.budget.hold(item.request_id, item.endpoint, tq.MODAL_PRICE, line.body, step=True)

    async def _control(self, going: list[TaskLine]) -> None:
        if reason := await asyncio.to_thread(self.sink.halt_reason):
            self.stats.halted = reason
            return
        await asyncio.to_thread(self.budget.refresh)
        until = time.time() + self.config.lease_seconds
        await asyncio.to_thread(self.sink.renew, [line.item.request_id for line in going], until)

    async def _release(self, lines: list[TaskLine]) -> None:
        if lines:
            self.stats.released += len(lines)
            await asyncio.to_thread(self.sink.release, [line.item.request_id for line in lines])

    # --- submit ----------------------------------------------------------------------------------

    def _ready(self, line: TaskLine) -> bool:
        """Whether a line may be submitted now: it follows nothing, or its origin has ended."""
        origin = line.body.get("after")
        if not isinstance(origin, str):
            return True
        known = self.lines.get(origin)
        return known is None or known.done

    async def _submit(self, line: TaskLine) -> None:
        call = SubmitCall(line.item.endpoint, line.family.submit_body(line.body))
        if isinstance(line.body.get("after"), str):
            follow = await asyncio.to_thread(self.rows.follow_up, line.body)
            if follow is None:  # its origin runs elsewhere (another worker's chunk): look again later
                line.retry_at = self._clock() + self.config.poll_interval
                return
            if isinstance(follow, str):
                await self._fail(line, "origin_failed", follow, status=None, sent=False)
                return
            call = line.family.follow_up(call, follow)
        await self._send_submit(line, call.endpoint, call.body)

    async def _send_submit(
        self, line: TaskLine, endpoint: Endpoint, body: dict[str, Any], *, step: bool = False
    ) -> None:
        """Send a submit (``step``: the task's modal step), its mark committed before it goes."""
        model = tq.MODAL_PRICE if step else line.item.model
        if not self.budget.try_reserve(line.item.request_id, line.item.endpoint, model, body, step=step):
            await self._budget_full(line)
            return
        content = orjson.dumps(await asyncio.to_thread(stored_to_data_urls, body, self._blobs))
        now = self._clock()
        async with self.pacing.slot(line.item.model, 0) as permit:
            if permit is None:
                return
            if line.record is None:
                line.record = await asyncio.to_thread(self.rows.begin, line.item.request_id, now)
            elif step:
                line.record = await asyncio.to_thread(self.rows.modal, line.record, SENDING, now)
            answer = await self.client.send(endpoint, line.family.request(content))
            self.stats.calls += 1
            outcome = submit_outcome(line.family, answer, now=time.time())
            await self.pacing.finish(permit, as_call(answer, outcome.classification), used_tokens=0)
        await self._after_submit(line, answer, outcome, now)

    async def _budget_full(self, line: TaskLine) -> None:
        """No room for a submit: it waits while tasks already charged go on being polled (their
        results fetched, their refunds freeing room); once none is left, the job pauses."""
        if self.budget.going(besides=line.item.request_id):
            line.retry_at = self._clock() + self.config.poll_interval
            return
        if not self.stats.halted:
            self.stats.halted = (
                f"budget reached: {self.budget.spent_text()}; raise it with "
                "`batcher resume JOB --budget USD` (workers) or `batcher run-job JOB --budget USD`"
            )
            await asyncio.to_thread(self.sink.pause_job, self.stats.halted)

    async def _after_submit(
        self, line: TaskLine, answer: RawResponse | NoAnswer, outcome: Any, now: float
    ) -> None:
        status = answer.status if isinstance(answer, RawResponse) else None
        if outcome.kind is SubmitKind.TAKEN:
            await self._taken(line, outcome, now)
        elif outcome.kind is SubmitKind.LATER and line.record and line.record.relay_task_id:
            # A modal step refused for now: its task stays MODAL, and the next poll sends it again.
            await self._step_refused(line)
            line.record = with_changes(line.record, next_poll_at=self._clock() + later_delay(1, jitter=1.0))
        elif outcome.kind is SubmitKind.UNKNOWN:
            await self._unknown(line, outcome.reason)
        elif outcome.kind is SubmitKind.LATER and line.tries + 1 < self.config.max_attempts:
            await asyncio.to_thread(self.rows.forget, line.item.request_id)
            line.record = None
            line.tries += 1
            line.retry_at = self._clock() + later_delay(line.tries, jitter=self._jitter())
            self.stats.retries += 1
        else:  # a refused submit's row goes with its line's end, in one transaction (never resent)
            await self._step_refused(line)
            if outcome.kind is SubmitKind.FATAL:
                if line.record is not None and line.record.relay_task_id is None:
                    await asyncio.to_thread(self.rows.forget, line.item.request_id)
                    line.record = None
                self.stats.halted = self._clean(outcome.reason)
                await asyncio.to_thread(self.sink.stop_job, self.stats.halted)
                return
            reason = self._clean(outcome.reason)
            await self._fail(line, "refused", reason, status=status, sent=True, charged=False)

    async def _step_refused(self, line: TaskLine) -> None:
        """A modal step the relay refused outright: nothing charged, its mark dropped."""
        if line.record is not None and line.record.modal is SENDING:
            line.record = await asyncio.to_thread(self.rows.modal, line.record, None, self._clock())
            self.budget.free_step(line.item.request_id)

    async def _taken(self, line: TaskLine, outcome: SubmitOutcome, now: float) -> None:
        task_id = outcome.task_id
        assert task_id is not None and line.record is not None  # begun before the submit
        first = now + self.config.poll_interval
        if line.record.modal is SENDING:
            line.record = await asyncio.to_thread(self.rows.modal_taken, line.record, task_id, first)
            return
        calls = outcome.calls if outcome.calls is not None else line.record.calls
        await asyncio.to_thread(self.rows.submitted, line.item.request_id, task_id, first, calls)
        line.record = with_changes(
            line.record, state=TaskState.SUBMITTED, relay_task_id=task_id, next_poll_at=first, calls=calls
        )
        if outcome.modal:
            await self._modal(line, TaskView(task_id, Phase.MODAL))

    async def _unknown(self, line: TaskLine, reason: str | None) -> None:
        await self._fail(line, UNKNOWN_CODE, UNKNOWN_MESSAGE, status=None, sent=True)

    async def _modal(self, line: TaskLine, view: TaskView) -> None:
        body = modal_body(line.body, view.task_id)
        if isinstance(body, str):
            await self._fail(line, "modal_needed", body, status=200, sent=True, charged=False)
            return
        await self._send_submit(line, Endpoint(modal_route(line.item.endpoint.path)), body, step=True)

    # --- polls -----------------------------------------------------------------------------------

    async def _poll(self, lines: list[TaskLine]) -> None:
        ids = [line.record.relay_task_id for line in lines if line.record and line.record.relay_task_id]
        call = lines[0].family.poll_call(lines[0].item.endpoint.path, ids)
        async with self.pacing.slot(lines[0].item.model, 0) as permit:
            if permit is None:
                return
            if call.body is None:
                answer = await self.client.fetch(call.endpoint)
            else:
                answer = await self.client.call(call.endpoint, call.body)
            classification = poll_classification(answer)
            await self.pacing.finish(permit, as_call(answer, classification), used_tokens=0)
        self.stats.calls += 1
        views: dict[str, TaskView] = {}
        if isinstance(answer, RawResponse) and 200 <= answer.status < 300:
            views = {v.task_id: v for v in lines[0].family.read_poll(answer.content)}
        await asyncio.gather(
            *(self._polled(line, views.get(line.record.relay_task_id or "")) for line in lines if line.record)
        )
        updates = [self._next(line) for line in lines if not line.done and line.record is not None]
        if updates:
            await asyncio.to_thread(self.rows.polled, updates)

    async def _polled(self, line: TaskLine, view: TaskView | None) -> None:
        assert line.record is not None
        if line.record.modal is ModalState.RETRY and view is not None and view.phase is not Phase.MODAL:
            line.record = await asyncio.to_thread(self.rows.modal, line.record, ModalState.TAKEN, 0.0)
        if view is not None and view.phase is Phase.SUCCEEDED:
            await self.ends.succeed(line, view)
        elif view is not None and view.phase is Phase.FAILED:
            reason = self._clean(f"task failed: {view.fail_reason or view.relay_status or 'no reason given'}")
            body = summary(view, None)
            await self._fail(line, "task_failed", reason, status=200, sent=True, charged=False, body=body)
        elif view is not None and view.phase is Phase.MODAL and line.record.modal is not ModalState.TAKEN:
            await self._modal(line, view)  # once: a row still MODAL after the step is the relay's lag
        elif self._clock() - line.record.submitted_at > self._deadline(line.family):
            hours = self._deadline(line.family) / 3600
            reason = (
                f"the task did not finish within the relay's deadline ({hours:g} h); the relay refunds it"
            )
            await self._fail(line, "deadline", reason, status=200, sent=True, charged=False)
        elif view is not None:
            state = TaskState.POLLING if view.phase is Phase.RUNNING or view.progress else line.record.state
            line.record = with_changes(line.record, state=state, progress=view.progress)
            line.relay_status = view.relay_status

    def _next(self, line: TaskLine) -> tq.PollUpdate:
        assert line.record is not None
        next_at = self._clock() + self.config.poll_interval
        line.record = with_changes(line.record, next_poll_at=next_at)
        return tq.PollUpdate(
            line.item.request_id, line.record.state, line.record.progress, line.relay_status, next_at
        )

    def _deadline(self, family: TaskFamily) -> float:
        return self.config.deadline or family.deadline_s

    async def _fail(self, line: TaskLine, code: str, message: str, **how: Any) -> None:
        """End the line failed (``TaskEnds.fail``: ``status``, ``sent``, ``charged``, ``body``)."""
        await self.ends.fail(line, code, message, at=self._clock(), **how)
