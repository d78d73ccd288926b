"""The store's rules, on SQLite and on PostgreSQL: leases, idempotent results, counters."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from jobs import store as q
from jobs.db import Store
from jobs.errors import JobNotFound, JobStateError
from jobs.models import JobStatus, Request, RequestState
from jobs.records import AttemptRecord, LineResult, Usage


def make_job(store: Store, n: int = 5) -> int:
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t.jsonl", source_sha256="abc")
        assert job.id is not None
        rows = [
            {
                "job_id": job.id,
                "custom_id": f"c{i}",
                "line_no": i,
                "endpoint": "/v1/embeddings",
                "model": "m",
                "body": '{"model":"m","input":"x"}',
                "est_tokens": 3,
                "state": "pending",
                "attempts": 0,
                "claims": 0,
                "usage_estimated": False,
            }
            for i in range(1, n + 1)
        ]
        q.insert_requests(s, rows)
        job.total = n
        q.start_job(s, job.id)
        return job.id


def ok(item_id: int, job_id: int, tokens: int = 10) -> LineResult:
    return LineResult(
        request_id=item_id,
        job_id=job_id,
        state=RequestState.SUCCEEDED,
        status_code=200,
        response_body='{"ok":true}',
        usage=Usage(tokens, 0, tokens),
    )


def attempt(item_id: int, job_id: int, n: int, outcome: str = "ok") -> AttemptRecord:
    return AttemptRecord(
        request_id=item_id,
        job_id=job_id,
        attempt_no=n,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=5,
        status_code=200,
        outcome=outcome,
        error_class=outcome,
        usage=Usage(10, 0, 10),
    )


def test_lines_given_as_tuples_are_stored_as_dicts_are(store: Store) -> None:
    """``insert_request_values`` (ingest's) and ``insert_requests`` store the same row, defaults included."""
    columns = ("job_id", "custom_id", "line_no", "endpoint", "model", "price_key", "body", "est_tokens")
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t.jsonl", source_sha256="abc")
        assert job.id is not None
        values = [(job.id, f"c{i}", i, "/v1/embeddings", "m", None, '{"input":"x"}', 3) for i in (1, 2)]
        q.insert_request_values(s, columns, values[:1])
        q.insert_requests(s, [dict(zip(columns, values[1], strict=True))])
        rows = s.exec(sa.select(Request).order_by(Request.line_no)).scalars().all()  # type: ignore[call-overload]
    first, second = (r.model_dump(exclude={"id", "custom_id", "line_no"}) for r in rows)
    assert first == second
    assert rows[0].state == RequestState.PENDING and rows[0].attempts == 0 and rows[0].custom_id == "c1"


def test_claim_lines_leases_in_line_order_and_skips_leased(store: Store) -> None:
    job_id = make_job(store)
    with store.session() as s:
        first = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, limit=3, now=1000.0)
        second = q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=60, limit=10, now=1001.0)
    assert [i.custom_id for i in first] == ["c1", "c2", "c3"]
    assert [i.custom_id for i in second] == ["c4", "c5"]


def test_claim_lines_takes_back_expired_leases_only(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, now=1000.0)
        assert q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=60, now=1059.0) == []
        again = q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=60, now=1061.0)
    assert [i.custom_id for i in again] == ["c1", "c2"]


def test_a_limited_claim_takes_pending_lines_first_then_expired_ones(store: Store) -> None:
    job_id = make_job(store, n=6)
    with store.session() as s:
        q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, limit=3, now=1000.0)
        q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=600, limit=1, now=1000.0)
        taken = q.claim_lines(s, job_id=job_id, owner="c", lease_seconds=60, limit=4, now=1100.0)
        again = q.claim_lines(s, job_id=job_id, owner="d", lease_seconds=60, limit=9, now=1101.0)
    # c4 held by a live lease; c1-c3 expired: c5, c6 pending first, then c1, c2, in id order
    assert [i.custom_id for i in taken] == ["c1", "c2", "c5", "c6"]
    assert [i.custom_id for i in again] == ["c3"]


def test_claim_lines_by_ids_claims_nothing_twice(store: Store) -> None:
    job_id = make_job(store, n=3)
    with store.session() as s:
        ids = [i.request_id for i in q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, limit=3)]
        q.record_results(s, [ok(ids[0], job_id)])
    with store.session() as s:
        redelivered = q.claim_lines(s, job_id=job_id, owner="b", lease_seconds=60, request_ids=ids)
    assert redelivered == []


def test_a_message_naming_another_jobs_lines_claims_and_fails_none_of_them(store: Store) -> None:
    """A message's ids are looked up by primary key alone; the job is checked on the rows found."""
    first, second = make_job(store, n=2), make_job(store, n=2)
    with store.session() as s:
        theirs = [i.request_id for i in q.claim_lines(s, job_id=second, owner="dead", lease_seconds=60)]
        q.release_owners(s, second, ["dead"])
        assert q.fail_overclaimed(s, first, max_claims=1, request_ids=theirs) == 0
        assert q.claim_lines(s, job_id=first, owner="a", lease_seconds=60, request_ids=theirs) == []
        mine = q.claim_lines(s, job_id=second, owner="b", lease_seconds=60, request_ids=[*theirs, 10**9])
        counts, job = q.state_counts(s, second), q.get_job(s, first)
    assert sorted(i.request_id for i in mine) == sorted(theirs)
    assert (counts["failed"], job.failed) == (0, 0)


def test_claim_lines_refuses_a_job_that_is_not_running(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        job = q.get_job(s, job_id)
        q.set_job_status(s, job, JobStatus.PAUSED)
    with store.session() as s:
        assert q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60) == []


def test_record_results_is_idempotent_and_counts_once(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        assert q.record_results(s, [ok(items[0].request_id, job_id, tokens=10)]) == 1
    with store.session() as s:
        second = ok(items[0].request_id, job_id, tokens=99)
        assert q.record_results(s, [second]) == 0
        job = q.get_job(s, job_id)
        line = next(q.iter_lines(s, job_id))
    assert job.succeeded == 1
    assert line.total_tokens == 10
    assert line.lease_owner is None


def test_record_attempts_keeps_every_call_and_raises_attempt_count(store: Store) -> None:
    job_id = make_job(store, n=1)
    with store.session() as s:
        item = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)[0]
        q.record_attempts(
            s, [attempt(item.request_id, job_id, 1, "retry"), attempt(item.request_id, job_id, 2)]
        )
    with store.session() as s:
        totals = q.usage_totals(s, job_id)
        line = next(q.iter_lines(s, job_id))
    assert totals.calls == 2
    assert totals.billed_total_tokens == 20
    assert line.attempts == 2


def test_complete_if_done_marks_job_completed(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        q.record_results(s, [ok(i.request_id, job_id) for i in items])
        assert q.complete_if_done(s, job_id)
        job = q.get_job(s, job_id)
    assert job.status == JobStatus.COMPLETED
    assert job.finished_at is not None


def test_cancel_job_cancels_pending_lines_only(store: Store) -> None:
    job_id = make_job(store, n=3)
    with store.session() as s:
        q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60, limit=1)
        assert q.cancel_job(s, job_id) == 2
    with store.session() as s:
        counts = q.state_counts(s, job_id)
        job = q.get_job(s, job_id)
        with pytest.raises(JobStateError):
            q.cancel_job(s, job_id)
    assert counts["cancelled"] == 2
    assert counts["running"] == 1
    assert job.cancelled == 2
    assert job.status == JobStatus.CANCELLED


def test_retry_failed_puts_failed_lines_back_with_fresh_budget(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        q.record_attempts(s, [attempt(items[0].request_id, job_id, 5, "permanent")])
        failed = LineResult(
            request_id=items[0].request_id, job_id=job_id, state=RequestState.FAILED, error_code="x"
        )
        q.record_results(s, [failed, ok(items[1].request_id, job_id)])
        q.complete_if_done(s, job_id)
    with store.session() as s:
        assert q.retry_failed(s, job_id) == 1
        job = q.get_job(s, job_id)
        counts = q.state_counts(s, job_id)
        line = next(q.iter_lines(s, job_id))
    assert (job.failed, job.status, job.finished_at) == (0, JobStatus.QUEUED, None)
    assert counts["pending"] == 1
    assert line.attempts == 0


def test_release_owners_and_fail_overclaimed(store: Store) -> None:
    job_id = make_job(store, n=2)
    with store.session() as s:
        q.claim_lines(s, job_id=job_id, owner="dead", lease_seconds=60)
        assert q.lease_owners(s, job_id) == ["dead"]
        assert q.release_owners(s, job_id, ["dead"]) == 2
        assert q.fail_overclaimed(s, job_id, max_claims=1) == 2
        job = q.get_job(s, job_id)
    assert job.failed == 2


def test_fail_overclaimed_of_a_messages_lines_leaves_the_others(store: Store) -> None:
    """A message's claim looks at its own lines only (the job's others wait for theirs)."""
    job_id = make_job(store, n=3)
    with store.session() as s:
        ids = [i.request_id for i in q.claim_lines(s, job_id=job_id, owner="dead", lease_seconds=60)]
        q.release_owners(s, job_id, ["dead"])
        assert q.fail_overclaimed(s, job_id, max_claims=1, request_ids=ids[:2]) == 2
        counts = q.state_counts(s, job_id)
        job = q.get_job(s, job_id)
    assert (counts["failed"], counts["pending"], job.failed) == (2, 1, 2)


def test_lines_given_back_by_a_live_owner_are_no_poison(store: Store) -> None:
    """Five pauses (or five chunks that stopped on an unreachable limiter) are not five deaths."""
    job_id = make_job(store, n=2)
    for _ in range(5):
        with store.session() as s:
            items = q.claim_lines(s, job_id=job_id, owner="live", lease_seconds=60)
            assert q.release_lines(s, [i.request_id for i in items], owner="live") == 2
    with store.session() as s:
        assert q.fail_overclaimed(s, job_id, max_claims=1) == 0
        items = q.claim_lines(s, job_id=job_id, owner="dead", lease_seconds=60)
        q.release_owners(s, job_id, ["dead"])  # died holding them: that claim stands
        assert q.fail_overclaimed(s, job_id, max_claims=1) == 2


def test_get_job_unknown_raises_job_not_found(store: Store) -> None:
    with store.session() as s, pytest.raises(JobNotFound, match="batcher jobs"):
        q.get_job(s, 4242)


def test_iter_lines_streams_in_input_order_across_pages(store: Store) -> None:
    job_id = make_job(store, n=7)
    with store.session() as s:
        seen = [line.line_no for line in q.iter_lines(s, job_id, chunk=3)]
    assert seen == list(range(1, 8))


def test_concurrent_writers_never_see_database_locked(store: Store) -> None:
    """Eight threads writing results at once: every write lands, none fails."""
    job_id = make_job(store, n=80)
    with store.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
    errors: list[BaseException] = []

    def writer(chunk: list[int]) -> None:
        try:
            for rid in chunk:
                with store.session() as s:
                    q.record_attempts(s, [attempt(rid, job_id, 1)])
                    q.record_results(s, [ok(rid, job_id)])
        except BaseException as exc:
            errors.append(exc)

    ids = [i.request_id for i in items]
    threads = [threading.Thread(target=writer, args=(ids[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.session() as s:
        job = q.get_job(s, job_id)
    assert errors == []
    assert job.succeeded == 80


def test_a_reading_session_sees_the_last_commit_without_waiting_for_a_writer(store: Store) -> None:
    """A write transaction stays open (on SQLite it holds the write lock) while another session
    reads: the read neither waits for it (it would time out) nor sees what it has not committed."""
    job_id = make_job(store, n=1)
    with store.session() as writer:
        q.report_in_flight(writer, owner="w", job_id=job_id, calls=5)
        with store.reading() as reader:
            assert q.calls_in_flight(reader, job_id) == 0
            assert q.get_job(reader, job_id).status == JobStatus.RUNNING
    with store.reading() as reader:
        assert q.calls_in_flight(reader, job_id) == 5


def test_attempt_rows_written_in_bulk_read_back_through_the_models(store: Store) -> None:
    """The driver-level insert stores times, flags and usage as the ORM reads them."""
    from sqlmodel import select

    from jobs.models import Attempt

    job_id = make_job(store, 1)
    with store.session() as s:
        [item] = q.claim_lines(s, job_id=job_id, owner="a", lease_seconds=60)
        q.record_outcomes(s, [attempt(item.request_id, job_id, 1)], [ok(item.request_id, job_id)])
    with store.session() as s:
        [row] = list(s.exec(select(Attempt)))
        line = q.get_job(s, job_id), next(q.iter_results(s, job_id))
    assert row.started_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert (row.sent, row.usage_estimated, row.prompt_tokens, row.attempt_no) == (True, False, 10, 1)
    assert line[0].succeeded == 1
    assert (line[1].state, line[1].attempts, line[1].prompt_tokens) == ("succeeded", 1, 10)


def test_unqueued_lines_page_in_line_order_over_pending_lines_without_a_live_message(store: Store) -> None:
    """Keyset pages by line number: each pending line with no live message once, in file order;
    running lines and lines stamped since the broker's loss are left out."""
    job_id = make_job(store, 10)
    with store.session() as s:
        lines = {ln.line_no: ln.id for ln in q.iter_lines(s, job_id)}
        q.mark_enqueued(s, [lines[2], lines[3]], now=100.0)  # lost: before the broker's loss at 150
        q.mark_enqueued(s, [lines[5]], now=200.0)  # still carried
        claimed = q.claim_lines(s, job_id=job_id, owner="w", lease_seconds=60, request_ids=[lines[7]])
        assert [c.request_id for c in claimed] == [lines[7]]
    pages: list[list[int]] = []
    after: int | None = None
    while True:
        with store.session() as s:
            page = q.unqueued_lines(s, job_id, lost_before=150.0, after_line=after, limit=3)
        if not page:
            break
        pages.append([line.line_no for line in page])
        assert [line.id for line in page] == [lines[line.line_no] for line in page]
        after = page[-1].line_no
    assert pages == [[1, 2, 3], [4, 6, 8], [9, 10]]
    with store.session() as s:  # without a loss, only the lines never stamped
        assert [x.line_no for x in q.unqueued_lines(s, job_id, lost_before=None)] == [1, 4, 6, 8, 9, 10]
