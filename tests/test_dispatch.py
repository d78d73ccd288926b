"""The sweeper's decisions about which pending lines have lost their message (fakeredis broker)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from batcher.ingest import IngestOptions, ingest_file
from jobs import store as q
from jobs.db import Store
from jobs.options import JobOptions
from tests.helpers import batch_line, write_jsonl
from workers.dispatch import (
    EPOCH_KEY,
    MESSAGE_LINES_MAX,
    PACKS_PER_MESSAGE,
    PENDING_SCAN_S,
    SCANNED_KEY,
    STALE_MESSAGE_S,
    enqueue_pending,
    queued_messages,
    start_distributed,
    sweep_job,
    take_sweep_turn,
)


class Recorder:
    """A publisher that keeps the line ids of every message instead of sending it."""

    def __init__(self) -> None:
        self.messages: list[list[int]] = []

    def __call__(self, job_id: int, ids: list[int], queue: str, priority: int) -> None:
        self.messages.append(ids)

    @property
    def lines(self) -> list[int]:
        return [i for ids in self.messages for i in ids]


@pytest.fixture
def broker() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def job(tmp_path: Path) -> Iterator[tuple[Store, int]]:
    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "m", "input": f"t{i}"}) for i in range(4)]
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    result = ingest_file(store, write_jsonl(tmp_path / "in.jsonl", rows), IngestOptions())
    assert result.job.id is not None
    yield store, result.job.id
    store.close()


def age_stamps(store: Store, job_id: int, broker: fakeredis.FakeRedis, seconds: float) -> None:
    """Pretend every line was enqueued ``seconds`` ago, into a broker intact since before then."""
    broker.set(EPOCH_KEY, repr(time.time() - seconds - 60))
    with store.session() as s:
        ids = [ln.id for ln in q.iter_lines(s, job_id) if ln.id is not None]
        q.mark_enqueued(s, ids, now=time.time() - seconds)


def test_start_enqueues_every_line_once(job: tuple[Store, int], broker: fakeredis.FakeRedis) -> None:
    store, job_id = job
    publish = Recorder()
    start_distributed(store, job_id, publish, broker)
    with store.session() as s:
        ids = [ln.id for ln in q.iter_lines(s, job_id)]
    assert sorted(publish.lines) == sorted(ids)
    assert len(ids) == 4


def test_sweep_leaves_recently_enqueued_lines_alone(
    job: tuple[Store, int], broker: fakeredis.FakeRedis
) -> None:
    store, job_id = job
    start_distributed(store, job_id, Recorder(), broker)
    again = Recorder()
    sweep_job(store, job_id, again, broker)
    assert again.lines == []


def test_sweep_reenqueues_stale_lines_when_no_message_waits(
    job: tuple[Store, int], broker: fakeredis.FakeRedis
) -> None:
    """A message taken by a worker killed before it claimed its lines sits unacknowledged for an
    hour: with the queues empty, lines still pending long after their message was sent get a new one."""
    store, job_id = job
    start_distributed(store, job_id, Recorder(), broker)
    age_stamps(store, job_id, broker, STALE_MESSAGE_S + 5)
    again = Recorder()
    report = sweep_job(store, job_id, again, broker)
    assert len(again.lines) == 4
    assert report.enqueued == 4


def test_sweep_waits_while_messages_are_queued(job: tuple[Store, int], broker: fakeredis.FakeRedis) -> None:
    """Lines behind a backlog are not lost: no duplicate messages while any batcher queue holds one."""
    store, job_id = job
    start_distributed(store, job_id, Recorder(), broker)
    age_stamps(store, job_id, broker, STALE_MESSAGE_S + 5)
    broker.rpush("batcher.chat\x06\x163", b"a message of another job")
    again = Recorder()
    sweep_job(store, job_id, again, broker)
    assert again.lines == []


def test_sweep_reenqueues_everything_after_the_broker_lost_its_data(
    job: tuple[Store, int], broker: fakeredis.FakeRedis
) -> None:
    store, job_id = job
    start_distributed(store, job_id, Recorder(), broker)
    age_stamps(store, job_id, broker, 1.0)
    broker.rpush("batcher.embeddings", b"still queued")
    broker.delete(EPOCH_KEY)  # a restart without persistence
    again = Recorder()
    sweep_job(store, job_id, again, broker)
    assert len(again.lines) == 4


def test_queued_messages_counts_every_priority_step_and_ignores_other_keys(
    broker: fakeredis.FakeRedis,
) -> None:
    broker.rpush("batcher.embeddings", b"1", b"2")
    broker.rpush("batcher.embeddings\x06\x169", b"3")
    broker.set("batcher.not-a-queue", b"x")
    broker.rpush("other.queue", b"4")
    broker.sadd("_kombu.binding.batcher.embeddings", b"binding")
    assert queued_messages(broker) == 3


def _embedding_job(tmp_path: Path, lines: int, options: JobOptions) -> tuple[Store, int]:
    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "m", "input": f"t{i}"}) for i in range(lines)]
    rows.append(
        batch_line(
            "chat", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
    )
    store = Store(f"sqlite:///{tmp_path / 'packs.db'}")
    source = write_jsonl(tmp_path / "packs.jsonl", rows)
    result = ingest_file(store, source, IngestOptions(job_options=options))
    assert result.job.id is not None
    return store, result.job.id


_LINES = 2 * 2 * PACKS_PER_MESSAGE + 10  # two whole messages of packs of 2, and a rest


@pytest.mark.parametrize(
    ("options", "sizes"),
    [
        (JobOptions(pack_size=2), [2 * PACKS_PER_MESSAGE, 2 * PACKS_PER_MESSAGE, 10, 1]),
        (JobOptions(pack=False, pack_size=2), [3] * (_LINES // 3) + [_LINES % 3, 1]),
    ],
)
def test_packed_lines_travel_several_packs_a_message(
    tmp_path: Path, options: JobOptions, sizes: list[int]
) -> None:
    """A packing job's embedding lines go PACKS_PER_MESSAGE packs a message; other lines a chunk."""
    store, job_id = _embedding_job(tmp_path, _LINES, options)
    publish = Recorder()
    enqueue_pending(store, job_id, publish, lost_before=None, chunk_size=3)
    store.close()
    assert [len(ids) for ids in publish.messages] == sizes
    assert sorted(publish.lines) == list(range(1, _LINES + 2))


def test_a_message_holds_at_most_message_lines_max_whatever_the_pack_size(tmp_path: Path) -> None:
    """64 packs of 1,024 would be 65,536 ids: more than SQLite takes in the claim's one statement."""
    store, job_id = _embedding_job(tmp_path, MESSAGE_LINES_MAX + 5, JobOptions(pack_size=1024))
    publish = Recorder()
    enqueue_pending(store, job_id, publish, lost_before=None)
    store.close()
    assert [len(ids) for ids in publish.messages] == [MESSAGE_LINES_MAX, 5, 1]


def test_no_sweep_takes_its_turn_while_a_start_enqueues(job: tuple[Store, int], redis_url: str) -> None:
    """The job is running from its first message on: a sweep then would take the lines not yet
    stamped for lost and send them a second message. The turn comes back once the start is done."""
    store, job_id = job
    client = redis.Redis.from_url(redis_url)
    turns: list[bool] = []

    def publish(job_id: int, ids: list[int], queue: str, priority: int) -> None:
        turns.append(take_sweep_turn(client, "a sweeper", hold_ms=10_000))

    start_distributed(store, job_id, publish, client)
    assert turns == [False]
    assert take_sweep_turn(client, "a sweeper", hold_ms=10_000)
    client.close()


def give_back(store: Store, job_id: int, n: int) -> None:
    """A live worker claims ``n`` lines and gives them back unstamped (say, at its shutdown)."""
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="w", lease_seconds=60, limit=n)
        q.release_lines(s, [i.request_id for i in items], owner="w")


def test_while_messages_wait_a_sweep_reads_pending_lines_at_most_once_a_scan_period(
    job: tuple[Store, int], broker: fakeredis.FakeRedis
) -> None:
    """Reading them walks every pending line of the job on PostgreSQL: not at every sweep."""
    store, job_id = job
    start_distributed(store, job_id, Recorder(), broker)
    age_stamps(store, job_id, broker, 10.0)  # into a broker intact for over PENDING_SCAN_S
    broker.rpush("batcher.embeddings", b"still queued")
    give_back(store, job_id, 1)
    first, second, later = Recorder(), Recorder(), Recorder()
    sweep_job(store, job_id, first, broker)
    give_back(store, job_id, 1)
    sweep_job(store, job_id, second, broker)
    broker.delete(f"{SCANNED_KEY}{job_id}")  # PENDING_SCAN_S later
    sweep_job(store, job_id, later, broker)
    assert (len(first.lines), second.lines, len(later.lines)) == (1, [], 1)
    assert broker.pttl(f"{SCANNED_KEY}{job_id}") > (PENDING_SCAN_S - 5) * 1000
