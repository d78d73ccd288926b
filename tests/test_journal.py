"""The journal: what a dead executor's file holds reaches the store once, sent calls as unknown."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest

from batcher.export import export_job
from jobs import store as q
from jobs.db import Store
from jobs.records import AttemptRecord, LineResult, Usage
from jobs.vectors import VectorEncoding, Vectors
from tests.helpers import all_attempts, all_lines, read_jsonl
from tests.test_executor import add_job
from workers.journal import LOST_MESSAGE, Journal, replay_dead, store_key
from workers.journal import _read as journal_read
from workers.journalform import _old_result as journal_result
from workers.journalform import landed_entry as landed_line
from workers.journalform import landed_records

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'j.db'}") as store:
        yield store


def attempt(rid: int, call_id: str) -> AttemptRecord:
    return AttemptRecord(rid, 1, 1, T0, 5, 200, "ok", "ok", usage=Usage(3, 2, 5), call_id=call_id)


def result(rid: int) -> LineResult:
    return LineResult(rid, 1, "succeeded", 200, '{"ok":true}', usage=Usage(3, 2, 5))


def die(journal: Journal) -> None:
    """What kill -9 leaves: the file, unlocked."""
    os.close(journal._fd)


def test_a_dead_journal_is_replayed_once_with_sent_calls_as_unknown(db: Store, tmp_path: Path) -> None:
    job = add_job(db, "/v1/chat/completions", [{"model": "m", "messages": []}] * 3)
    folder = tmp_path / "journal"
    journal = Journal(folder, owner="host:1:x", store=store_key(db.url))
    for rid in (1, 2, 3):
        journal.sent(f"call{rid}", job, [(rid, 1)], T0)
    journal.landed([attempt(1, "call1")], [result(1)])
    journal.stored(journal.seq)  # line 1 reached the store ... (here: pretend it did)
    journal.landed([attempt(2, "call2")], [result(2)])  # line 2 landed, never stored
    die(journal)  # line 3 was in flight
    assert replay_dead(db, folder) == 3  # line 2's attempt and result, line 3's unknown call
    lines = {ln.id: ln for ln in all_lines(db)}
    assert (lines[1].state, lines[2].state, lines[3].state) == ("pending", "succeeded", "pending")
    attempts = {a.request_id: a for a in all_attempts(db)}
    assert attempts[2].call_id == "call2" and attempts[2].total_tokens == 5
    assert (attempts[3].status_code, attempts[3].sent, attempts[3].error_message) == (
        None,
        True,
        LOST_MESSAGE,
    )
    assert list(folder.iterdir()) == []
    assert replay_dead(db, folder) == 0


def test_a_packed_calls_one_record_is_replayed_as_one_row_for_all_its_lines(
    db: Store, tmp_path: Path
) -> None:
    job = add_job(db, "/v1/embeddings", [{"model": "m", "input": "x"}] * 3)
    folder = tmp_path / "journal"
    journal = Journal(folder, owner="host:1:x", store=store_key(db.url))
    carried = ((1, 1), (2, 2), (3, 1))
    journal.sent("pack", job, list(carried), T0)
    call = AttemptRecord(
        1, job, 1, T0, 5, 200, "ok", "ok", usage=Usage(9, 0, 9), call_id="pack", carried=carried
    )
    journal.landed([call], [result(1), result(2), result(3)])
    die(journal)
    assert replay_dead(db, folder) == 4
    [row] = all_attempts(db)
    assert (row.request_id, row.lines, row.total_tokens) == (1, 3, 9)
    assert [(ln.state, ln.attempts) for ln in all_lines(db)] == [
        ("succeeded", 1),
        ("succeeded", 2),
        ("succeeded", 1),
    ]
    assert replay_dead(db, folder) == 0


def test_a_live_journal_and_another_stores_journal_are_left_alone(db: Store, tmp_path: Path) -> None:
    job = add_job(db, "/v1/chat/completions", [{"model": "m", "messages": []}])
    folder = tmp_path / "journal"
    live = Journal(folder, owner="host:1:live", store=store_key(db.url))
    live.sent("c", job, [(1, 1)], T0)
    other = Journal(folder, owner="host:2:other", store=store_key("sqlite:///elsewhere.db"))
    other.sent("d", job, [(1, 1)], T0)
    die(other)
    assert replay_dead(db, folder) == 0
    assert len(list(folder.iterdir())) == 2
    assert all_attempts(db) == []
    live.close()


def test_a_journal_whose_records_are_all_stored_is_removed_at_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path, owner="o", store="s")
    journal.sent("c", 1, [(1, 1)], T0)
    journal.landed([attempt(1, "c")], [result(1)])
    journal.stored(journal.seq)
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_packed_calls_vector_block_is_journaled_once_for_all_its_lines() -> None:
    block = np.arange(6, dtype="<f4").tobytes()  # three 2-dimension vectors of one packed call
    lines = [
        LineResult(1, 1, "succeeded", 200, "{}", vectors=Vectors(block, 2, start=0, stop=1)),
        LineResult(2, 1, "succeeded", 200, "{}", vectors=Vectors(block, 2, start=1, stop=3)),
    ]
    entry = landed_line(1, [], lines)
    record = orjson.loads(entry)
    assert len(record["b"]) == 1  # the block once, not once a line
    _, replay = journal_read(io.BytesIO(entry))
    [(_, _, back)] = replay.entries
    assert [r.vectors.matrix().tolist() for r in back if r.vectors] == [
        [[0.0, 1.0]],
        [[2.0, 3.0], [4.0, 5.0]],
    ]


def test_a_packed_calls_records_round_trip_through_one_columnar_entry() -> None:
    block = np.arange(12, dtype="<f4").tobytes()
    started = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    attempts = [
        AttemptRecord(
            rid, 1, n, started, 50, 200, "ok", "ok", usage=Usage(p, 0, p), call_id="c", worker="w:1"
        )
        for rid, n, p in ((7, 1, 3), (8, 2, 4), (9, 1, 3))
    ]
    attempts.append(
        AttemptRecord(
            7, 1, 1, started, 50, 200, "ok", "ok", worker="w:1", call_id="d", carried=((7, 1), (8, 2))
        )
    )
    results = [
        LineResult(rid, 1, "succeeded", 200, f'{{"i":{rid}}}', upstream_request_id="r", usage=Usage(p, 0, p),
                   latency_ms=50, vectors=Vectors(block, 2, VectorEncoding.BASE64, i, i + 2), cache_key=f"k{rid}")
        for i, (rid, p) in enumerate(((7, 3), (8, 4), (9, 3)))
    ]  # fmt: skip
    results.append(
        LineResult(10, 1, "failed", None, None, usage=Usage(seconds=Decimal("2.5"), calls=Decimal(3)))
    )
    entry = orjson.loads(landed_line(4, attempts, results))
    assert set(entry["a"]["v"]) == {"request_id", "attempt_no", "usage", "call_id", "carried"}
    assert len(entry["b"]) == 1
    back_attempts, back_results = landed_records(entry)
    assert back_attempts == attempts
    assert back_results == results
    assert back_results[1].vectors is not None and back_results[1].vectors.raw() == block[8:24]


def test_a_one_line_calls_records_are_all_shared_fields_and_round_trip() -> None:
    """One record a kind (a call of one line) is written with every field shared, as the columns
    of a pack would hold it; what is read back is the records."""
    block = np.arange(4, dtype="<f4").tobytes()
    started = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    attempts = [AttemptRecord(7, 1, 2, started, 50, 200, "ok", "ok", usage=Usage(3, 0, 3), call_id="c")]
    results = [
        LineResult(7, 1, "succeeded", 200, "{}", usage=Usage(seconds=Decimal("2.5")), latency_ms=50,
                   vectors=Vectors(block, 2, VectorEncoding.BASE64, 0, 2), cache_key="k7")
    ]  # fmt: skip
    entry = orjson.loads(landed_line(3, attempts, results))
    assert (entry["a"]["k"], entry["a"]["v"], entry["r"]["k"], entry["r"]["v"]) == (1, {}, 1, {})
    assert entry["a"]["s"]["usage"] == [3, 0, 3, 0, False, 0, 0, 0, 0, "0", 0, "0"]
    assert entry["r"]["s"]["vectors"] == [0, 2, "base64", 0, 2] and len(entry["b"]) == 1
    assert landed_records(entry) == (attempts, results)


def test_entries_of_the_older_forms_are_read() -> None:
    a = {"request_id": 1, "job_id": 1, "attempt_no": 1, "started_at": "2026-01-01T00:00:00+00:00",
         "duration_ms": 5, "status_code": 200, "outcome": "ok", "error_class": "ok",
         "usage": {"prompt_tokens": 3, "seconds": "1.5", "calls": "0"}}  # fmt: skip
    r = {"request_id": 1, "job_id": 1, "state": "succeeded", "usage": {"prompt_tokens": 3}}
    for record in (
        {"n": 1, "e": {"a": [dict(a)], "r": [dict(r)]}, "b": []},
        {"n": 1, "a": [dict(a)], "r": [dict(r)]},
    ):
        [attempt_back], [result_back] = landed_records(record)
        assert attempt_back.usage == Usage(prompt_tokens=3, seconds=Decimal("1.5"))
        assert attempt_back.started_at == T0 and result_back.usage == Usage(prompt_tokens=3)


def test_an_older_journals_own_part_vectors_are_read() -> None:
    own = base64.b64encode(np.array([2.0, 3.0], dtype="<f4").tobytes()).decode()
    vectors = {"data": own, "dim": 2, "encoding": "float"}
    back = journal_result({"request_id": 2, "job_id": 1, "state": "succeeded", "vectors": vectors})
    assert back.vectors is not None
    assert back.vectors.matrix().tolist() == [[2.0, 3.0]]


def test_replayed_vectors_are_exported(db: Store, tmp_path: Path) -> None:
    job = add_job(db, "/v1/embeddings", [{"model": "m", "input": ["a", "b"]}])
    folder = tmp_path / "journal"
    journal = Journal(folder, owner="host:1:v", store=store_key(db.url))
    block = np.array([[0.5, 1.0], [2.0, -1.0], [9.0, 9.0]], dtype="<f4").tobytes()
    body = '{"object":"list","data":[{"object":"embedding","index":0},{"object":"embedding","index":1}]}'
    line = LineResult(1, job, "succeeded", 200, body, vectors=Vectors(block, 2, start=0, stop=2))
    journal.landed([attempt(1, "c1")], [line])
    die(journal)
    replay_dead(db, folder)
    out = tmp_path / "out.jsonl"
    export_job(db, job, out)
    [row] = read_jsonl(out)
    assert [d["embedding"] for d in row["response"]["body"]["data"]] == [[0.5, 1.0], [2.0, -1.0]]


def test_replayed_records_keep_their_cache_key_cached_mark_and_provider(db: Store, tmp_path: Path) -> None:
    """A killed worker's answer still fills the response cache and names the provider that took it."""
    job = add_job(db, "/v1/embeddings", [{"model": "m", "input": "a"}, {"model": "m", "input": "a"}])
    folder = tmp_path / "journal"
    journal = Journal(folder, owner="host:1:c", store=store_key(db.url))
    routed = AttemptRecord(1, 1, 1, T0, 5, 200, "ok", "ok", call_id="c1", provider="relay-a/KEY_A …1a2b")
    first = LineResult(1, job, "succeeded", 200, '{"data":[]}', cache_key="k" * 32, provider=routed.provider)
    twin = LineResult(2, job, "succeeded", 200, '{"data":[]}', cached=True)
    journal.landed([routed], [first, twin])
    die(journal)
    replay_dead(db, folder)
    lines = {ln.id: ln for ln in all_lines(db)}
    assert (lines[1].cached, lines[1].provider) == (False, "relay-a/KEY_A …1a2b")
    assert lines[2].cached is True
    assert all_attempts(db)[0].provider == "relay-a/KEY_A …1a2b"
    with db.session() as session:
        assert set(q.cached_answers(session, ["k" * 32])) == {"k" * 32}
