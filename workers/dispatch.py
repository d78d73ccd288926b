"""What the broker carries: enqueueing a job's lines as chunk messages, and the sweeper.

A message is ``run_lines(job_id, [line ids])``, on the queue of the lines' endpoint kind: never a
body, a key or a setting. Each line enqueued is stamped ``enqueued_at`` in the store.

The sweeper makes a job finish even if the broker loses messages:
- lines whose lease ran out (a dead worker on another machine), or leased by a process of this
  host that is gone (``kill -9``), go back to pending;
- pending lines never enqueued are enqueued;
- a broker that lost its data (restart without persistence, FLUSHALL) is noticed through the
  *epoch* key this module keeps in the broker's Redis: when the key is gone, it is set anew to
  the current time, and every pending line enqueued before that epoch is enqueued again;
- a message taken by a worker that was killed before its pool process claimed the lines stays
  unacknowledged in Redis until the visibility timeout (an hour) gives it back. So when no
  message waits in any batcher queue, a line still pending ``STALE_MESSAGE_S`` after it was
  enqueued has lost its message, and is enqueued again (while messages wait, it may simply
  be behind them).
A line enqueued twice is harmless: claiming it in the store makes the second message a no-op.

While messages wait, a sweep reads a job's pending lines at most every ``PENDING_SCAN_S`` (a key
in the broker's Redis says when one last did), or when it has just expired leases or the broker
lost its data in that time: on PostgreSQL that read walks every pending line of the job to check
its stamp (0.9-1.4 s at 200,000 pending lines, every 10 s, on the two cores the workers use). A
line a live worker gave back while messages wait then waits up to that long for its message;
with the queues empty every sweep reads them, as before.
Sweeps take turns through a lock key in the broker's Redis (``take_sweep_turn``), and
``start_distributed`` holds that key while it enqueues a job: the job is running from its first
message on, and a sweep in between took every line not yet stamped for lost and sent it a second
message (a no-op claim for a worker, of 16,384 packed lines). A broker lost mid-start leaves the
turn to expire.

Broker errors are translated into ``BrokerError`` here, with what to do next.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from jobs import store as q
from jobs.db import Store, safe_url
from jobs.endpoints import Endpoint
from jobs.errors import BrokerError, JobStateError
from jobs.models import JobStatus
from workers.app import QUEUE_PREFIX, TASK_NAME, TASKS_QUEUE, default_app, queue_name
from workers.endpoints import family_of
from workers.journal import replay_dead
from workers.leases import recover_dead_leases

EPOCH_KEY = "batcher:broker:epoch"
STALE_MESSAGE_S = 30.0  # far above the time from a message's delivery to its lines' claim
CHUNK_SIZE = 500
# Packed lines travel 64 packs a message: at 500 lines a task made two calls and paid a task's
# set-up (claim, executor, journal, leases of the dead) for them; at 16 packs that set-up still
# cost 15 % of the wall time (1M lines, two workers on PostgreSQL: 211 and 226 s at 16 packs,
# 173-190 s at 64). A message of 64 packs is still far fewer calls than one of 500 unpacked lines,
# so it ends as well within the task's time limit.
PACKS_PER_MESSAGE = 64
# At most this many lines a message whatever the pack size: a worker claims a message's ids in one
# statement, and SQLite takes at most 32,766 parameters in one (64 packs of 512 would be 32,768).
MESSAGE_LINES_MAX = 16_384
PAGE_SIZE = 5000
SWEEP_LOCK_KEY = "batcher:sweeper:lock"
PENDING_SCAN_S = 60.0
SCANNED_KEY = "batcher:sweeper:scanned:"  # + job id: set for PENDING_SCAN_S by a sweep that read them
STARTING_HOLD_MS = 30_000  # renewed at every message: only a start that died leaves it to expire

Publish = Callable[[int, list[int], str, int], None]  # (job id, line ids, queue, priority)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    expired: int = 0
    enqueued: int = 0
    messages: int = 0
    job_ids: tuple[int, ...] = ()  # the jobs it expired or enqueued lines of (sweep_all)


def celery_publisher(app: Any = None) -> Publish:
    """Publish ``run_lines`` messages through a Celery app (default: ``workers.app.default_app()``)."""
    if app is None:
        app = default_app()

    def publish(job_id: int, ids: list[int], endpoint: str, priority: int) -> None:
        app.send_task(
            TASK_NAME,
            args=[job_id, ids],
            queue=queue_name(Endpoint(endpoint)),
            priority=priority,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    return publish


def celery_later(app: Any = None) -> Callable[[int, list[int], float, int], None]:
    """Publish ``run_lines`` messages of task lines on ``batcher.tasks``, due after a countdown."""
    if app is None:
        app = default_app()

    def later(job_id: int, ids: list[int], countdown: float, priority: int) -> None:
        app.send_task(
            TASK_NAME,
            args=[job_id, ids],
            queue=TASKS_QUEUE,
            priority=priority,
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    return later


def take_sweep_turn(client: redis.Redis, owner: str, *, hold_ms: int) -> bool:
    """Whether this process may sweep now: no other sweep, and no job start, holds the turn."""
    return bool(client.set(SWEEP_LOCK_KEY, owner, nx=True, px=hold_ms))


def _holding_sweeps(client: redis.Redis, publish: Publish, token: str) -> Publish:
    """``publish``, keeping the sweeps' turn for ``token`` at every message (see the docstring)."""

    def held(job_id: int, ids: list[int], endpoint: str, priority: int) -> None:
        client.set(SWEEP_LOCK_KEY, token, px=STARTING_HOLD_MS)
        publish(job_id, ids, endpoint, priority)

    return held


def _give_turn_back(client: redis.Redis, token: str) -> None:
    if client.get(SWEEP_LOCK_KEY) in (token, token.encode()):  # either way the client decodes
        client.delete(SWEEP_LOCK_KEY)


def broker_epoch(client: redis.Redis, *, now: float) -> float:
    """The time since which the broker's data is intact; set to ``now`` if the key is gone."""
    client.set(EPOCH_KEY, repr(now), nx=True)
    value = client.get(EPOCH_KEY)
    return float(value) if value is not None else now


def queued_messages(client: redis.Redis) -> int:
    """How many messages wait in batcher's queues (every priority step of every endpoint kind)."""
    waiting = 0
    for key in client.scan_iter(match=QUEUE_PREFIX + "*", count=200):
        if client.type(key) == b"list":
            waiting += int(client.llen(key))
    return waiting


def lost_since(client: redis.Redis, *, now: float) -> float:
    """Lines stamped as enqueued before this time have no live message any more."""
    return _lost_since(client, now=now, waiting=queued_messages(client))


def _lost_since(client: redis.Redis, *, now: float, waiting: int) -> float:
    epoch = broker_epoch(client, now=now)
    return max(epoch, now - STALE_MESSAGE_S) if waiting == 0 else epoch


def _pending_scan_due(
    client: redis.Redis, job_id: int, *, now: float, waiting: int, lost_before: float
) -> bool:
    """Whether this sweep reads the job's pending lines (see the module's docstring)."""
    if waiting == 0 or lost_before > now - PENDING_SCAN_S:
        return True
    return bool(client.set(f"{SCANNED_KEY}{job_id}", "1", nx=True, px=int(PENDING_SCAN_S * 1000)))


def enqueue_pending(
    store: Store, job_id: int, publish: Publish, *, lost_before: float | None, chunk_size: int = CHUNK_SIZE
) -> SweepReport:
    """Send every pending line of the job that has no live message, in chunks; stamp them.

    A chunk is ``chunk_size`` lines, or ``PACKS_PER_MESSAGE`` packs of embedding lines when the
    job packs them (at most ``MESSAGE_LINES_MAX`` lines).
    """
    enqueued = messages = 0
    after: int | None = None
    with store.session() as session:
        priority = q.get_job(session, job_id).priority
        options = q.job_options(session, job_id)
    packs = min(options.pack_size * PACKS_PER_MESSAGE, MESSAGE_LINES_MAX)
    packed = max(chunk_size, packs) if options.pack else chunk_size
    page_size = max(1, PAGE_SIZE // packed) * packed  # whole messages, never a split one
    while True:
        with store.session() as session:
            page = q.unqueued_lines(
                session, job_id, lost_before=lost_before, after_line=after, limit=page_size
            )
            if not page:
                break
            for endpoint, ids in _by_endpoint(page).items():
                size = packed if family_of(Endpoint(endpoint)).packable else chunk_size
                for start in range(0, len(ids), size):
                    publish(job_id, ids[start : start + size], endpoint, priority)
                    messages += 1
            q.mark_enqueued(session, [line.id for line in page], now=time.time())
        enqueued, after = enqueued + len(page), page[-1].line_no
    return SweepReport(enqueued=enqueued, messages=messages)


def _by_endpoint(page: list[q.Unqueued]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for line in page:
        groups[line.endpoint].append(line.id)
    return groups


def sweep_job(
    store: Store, job_id: int, publish: Publish, client: redis.Redis, *, journals: Path | None = None
) -> SweepReport:
    """Expire dead leases and enqueue what has no live message, for one job.

    Journals of dead processes on this host are replayed first, so the lines whose answers they
    hold are terminal before the dead leases are given back.
    """
    if journals is not None:
        replay_dead(store, journals)
    now = time.time()
    with store.session() as session:
        expired = recover_dead_leases(session, job_id) + q.expire_leases(session, job_id, now=now)
        q.complete_if_done(session, job_id)
    waiting = queued_messages(client)
    lost_before = _lost_since(client, now=now, waiting=waiting)
    if not expired and not _pending_scan_due(
        client, job_id, now=now, waiting=waiting, lost_before=lost_before
    ):
        return SweepReport()
    report = enqueue_pending(store, job_id, publish, lost_before=lost_before)
    return SweepReport(expired=expired, enqueued=report.enqueued, messages=report.messages)


def sweep_all(
    store: Store, publish: Publish, client: redis.Redis, *, journals: Path | None = None
) -> SweepReport:
    """Sweep every running distributed job."""
    with store.session() as session:
        job_ids = [job.id for job in q.active_jobs(session, mode="celery") if job.id is not None]
    total = SweepReport()
    for job_id in job_ids:
        r = sweep_job(store, job_id, publish, client, journals=journals)
        touched = total.job_ids + ((job_id,) if r.expired or r.enqueued else ())
        total = SweepReport(
            total.expired + r.expired, total.enqueued + r.enqueued, total.messages + r.messages, touched
        )
    return total


def start_distributed(store: Store, job_id: int, publish: Publish, client: redis.Redis) -> SweepReport:
    """Mark a job as run by workers and enqueue every pending line (submit, resume).

    Every pending line gets a new message, also those stamped as enqueued: a message consumed
    while the job was paused claimed nothing, and is gone. Duplicates are claimed only once.
    """
    token = f"start:{uuid.uuid4().hex}"
    translate_broker_errors(lambda: _hold_for_start(client, token), client, job_id=job_id)
    with store.session() as session:  # the broker answered: only now is the job the workers'
        job = q.get_job(session, job_id)
        if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
            _give_turn_back(client, token)
            raise JobStateError(f"job {job_id} is {job.status}; nothing to run")
        before = JobStatus(job.status)
        job.mode = "celery"
        q.set_job_status(session, job, JobStatus.RUNNING)

    def enqueue() -> SweepReport:
        with store.session() as session:
            expired = q.expire_leases(session, job_id, now=time.time())
        held = _holding_sweeps(client, publish, token)
        report = enqueue_pending(store, job_id, held, lost_before=time.time())
        _give_turn_back(client, token)
        return SweepReport(expired, report.enqueued, report.messages)

    try:
        return translate_broker_errors(enqueue, client, job_id=job_id)
    except BrokerError:  # lost mid-way: the job is not running on the workers
        with store.session() as session:
            q.set_job_status(session, q.get_job(session, job_id), before)
        raise


def _hold_for_start(client: redis.Redis, token: str) -> None:
    broker_epoch(client, now=time.time())
    client.set(SWEEP_LOCK_KEY, token, px=STARTING_HOLD_MS)  # over a sweeper's turn: see the docstring


T = TypeVar("T")


def translate_broker_errors(action: Callable[[], T], client: redis.Redis, *, job_id: int | None = None) -> T:
    """Run ``action``; a broker that cannot be reached becomes a ``BrokerError`` saying what to do."""
    try:
        return action()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, KombuOperationalError) as exc:
        where, job = safe_url(_client_url(client)), job_id if job_id is not None else "JOB"
        raise BrokerError(
            f"cannot reach the broker at {where} ({exc}); the job is stored: start Redis and run "
            f"`batcher resume {job}`, or run it in this process with `batcher run-job {job}`"
        ) from None


def _client_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
