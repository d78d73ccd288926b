"""The usage report over Attempt rows: kinds of calls, cost confirmed and unknown, grouping, filters.

The store holds two jobs. Job 1 (gpt-4o-mini at $0.15 / $0.60 per 1M, tag "nightly"):

- line a: a 429, then ok (1000, 500)                          → succeeded $0.00045
- line b: ok (100, 50), then ok again after a lease expiry    → succeeded $0.000045 + duplicate $0.000045
- line c: a 200 with usage (200, 100) retried, then a 400     → failed-line $0.00009, line failed
- line d: a timeout after sending, then ok (1000, 500)        → unknown ≤ $0.00045 (its eventual usage)
                                                                 + succeeded $0.00045
- line e: a timeout after sending; line failed, est 3000      → unknown ≤ 3000 × 0.60/1M = $0.0018

Job 2 (no tag): a "mystery-model" line ok (10, 5) with no price, and a tts-1 line of 1000
characters ($15 per 1M: $0.015) whose usage batcher estimated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from batcher.usage import (
    NO_TAG,
    Report,
    attempt_kind,
    parse_by,
    unpriced_hint,
    usage_report,
)
from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.options import JobOptions
from jobs.records import AttemptRecord, LineResult, Usage
from workers.prices import PriceBook, default_book, load_prices

DAY1 = datetime(2025, 5, 1, 23, 30, tzinfo=UTC)
DAY2 = datetime(2025, 5, 2, 8, 0, tzinfo=UTC)


def _job(store: Store, name: str, options: dict[str, object]) -> int:
    with store.session() as s:
        job = q.create_job(
            s, name=name, source_path=name, source_sha256=name, options=JobOptions.model_validate(options)
        )
        assert job.id is not None
        return job.id


def _line(
    store: Store,
    job_id: int,
    custom_id: str,
    calls: Sequence[tuple[int | None, str, Usage | None]],
    *,
    state: str,
    model: str = "gpt-4o-mini",
    endpoint: str = "/v1/chat/completions",
    est_tokens: int = 0,
    at: datetime = DAY1,
) -> None:
    """A line with its calls (status, outcome, usage) and its final state and usage."""
    with store.session() as s:
        row = {"job_id": job_id, "custom_id": custom_id, "line_no": len(custom_id), "endpoint": endpoint,
               "model": model, "body": '{"input": "x"}', "est_tokens": est_tokens}  # fmt: skip
        q.insert_requests(s, [row])
        rid = max(r.id for r in q.iter_lines(s, job_id) if r.custom_id == custom_id)
        attempts = [
            AttemptRecord(rid, job_id, n, at, 10, status, outcome, "x", sent=True, usage=usage)
            for n, (status, outcome, usage) in enumerate(calls, start=1)
        ]
        q.record_attempts(s, attempts)
        final = next((u for status, outcome, u in calls if outcome == "ok"), None)
        q.record_results(s, [LineResult(rid, job_id, state, usage=final)])


@pytest.fixture
def filled(store: Store) -> Store:
    one = _job(store, "nightly.jsonl", {"tag": "nightly", "metadata": {"team": "search"}})
    _line(store, one, "a", [(429, "retry", None), (200, "ok", Usage(1000, 500, 1500))], state="succeeded")
    _line(
        store,
        one,
        "b",
        [(200, "ok", Usage(100, 50, 150)), (200, "ok", Usage(100, 50, 150))],
        state="succeeded",
    )
    _line(store, one, "c", [(200, "retry", Usage(200, 100, 300)), (400, "permanent", None)], state="failed")
    _line(
        store,
        one,
        "d",
        [(None, "retry", None), (200, "ok", Usage(1000, 500, 1500))],
        state="succeeded",
        at=DAY2,
    )
    _line(store, one, "e", [(None, "retry", None)], state="failed", est_tokens=3000, at=DAY2)
    two = _job(store, "adhoc.jsonl", {})
    _line(store, two, "f", [(200, "ok", Usage(10, 5, 15))], state="succeeded", model="mystery-model")
    speech = Usage(characters=1000, estimated=True)
    _line(
        store, two, "g", [(200, "ok", speech)], state="succeeded", model="tts-1", endpoint="/v1/audio/speech"
    )
    return store


def _rows(report: Report) -> dict[tuple[str, ...], object]:
    return {row.key: row.totals for row in report.rows}


def test_job_totals_by_kind(filled: Store) -> None:
    report = usage_report(filled, [1], by="job", prices=default_book())
    (row,) = report.rows
    t = row.totals
    assert row.key == ("1:nightly.jsonl",)
    assert (t.calls, t.billed_calls, t.unknown_calls) == (9, 5, 2)
    tokens = {kind: (v.prompt_tokens, v.completion_tokens) for kind, v in t.tokens.items()}
    assert tokens == {
        "succeeded": (2100, 1050),
        "duplicate": (100, 50),
        "failed": (200, 100),
        "unknown": (4000, 500),  # d's eventual usage (1000, 500) + e's estimate 3000
        "other": (0, 0),
    }
    # 0.00045 (a) + 0.000045 + 0.000045 (b) + 0.00009 (c) + 0.00045 (d)
    assert t.cost == D("0.00108")
    # d: 0.00045; e: 3000 × 0.60/1M = 0.0018
    assert t.unknown_cost == D("0.00225")
    assert (t.billed.prompt_tokens, t.billed.completion_tokens) == (2400, 1200)


def test_totals_row_and_unpriced_model(filled: Store) -> None:
    report = usage_report(filled, None, by="model", prices=default_book())
    rows = _rows(report)
    assert set(rows) == {("gpt-4o-mini",), ("mystery-model",), ("tts-1",)}
    total = report.total
    assert total.calls == 11
    assert total.cost == D("0.00108") + D("0.015")
    assert total.characters == 1000
    assert total.estimated_calls == 1
    assert total.unpriced_calls == 1
    assert total.unpriced_models == {"mystery-model"}


def test_unpriced_hint_shows_an_example_entry() -> None:
    hint = unpriced_hint({"mystery-model"})
    assert "--prices FILE" in hint and '[models."mystery-model"]' in hint and "input = " in hint


def test_by_day_and_tag_and_metadata(filled: Store) -> None:
    by_day = _rows(usage_report(filled, [1], by="day", prices=default_book()))
    assert set(by_day) == {("2025-05-01",), ("2025-05-02",)}
    by_tag = _rows(usage_report(filled, None, by="tag,endpoint", prices=default_book()))
    assert set(by_tag) == {
        ("nightly", "/v1/chat/completions"),
        (NO_TAG, "/v1/chat/completions"),
        (NO_TAG, "/v1/audio/speech"),
    }
    by_team = _rows(usage_report(filled, None, by="metadata.team", prices=default_book()))
    assert set(by_team) == {("search",), (NO_TAG,)}


@pytest.mark.parametrize(
    ("since", "until", "calls"),
    [
        (None, None, 9),
        (date(2025, 5, 2), None, 3),  # d's two calls and e's one
        (None, date(2025, 5, 1), 6),  # until is inclusive: the whole first day
        (date(2025, 5, 3), None, 0),
    ],
)
def test_since_until(filled: Store, since: date | None, until: date | None, calls: int) -> None:
    report = usage_report(filled, [1], since=since, until=until, prices=default_book())
    assert report.total.calls == calls


def test_keyset_pages_see_every_row_once(filled: Store) -> None:
    with filled.session() as s:
        ids = [row.id for row in q.iter_calls(s, page=2)]
    assert len(ids) == 11 and ids == sorted(set(ids))


def test_relay_group_ratio_applies_per_call(filled: Store, tmp_path: Path) -> None:
    pricing = {
        "data": [{"model_name": "gpt-4o-mini", "quota_type": 0, "model_ratio": 0.075, "completion_ratio": 4}],
        "group_ratio": {"default": 1, "vip": 1.5},
    }
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps(pricing))
    report = usage_report(filled, [1], prices=load_prices([path]), group="vip")
    # per call, ceil((p + c × 4) × 0.075 × 1.5): a 337.5 → 338; b 33.75 → 34 twice; c 67.5 → 68; d 338
    assert report.total.cost == D(338 + 34 + 34 + 68 + 338) / D(500_000)


def test_unknown_group_is_a_config_error(filled: Store) -> None:
    with pytest.raises(ConfigError, match="no group ratio"):
        usage_report(filled, [1], prices=PriceBook(), group="vip")


def test_currency_conversion_is_display_only(filled: Store) -> None:
    book = load_prices(currency="CNY", rate=D("7.2"))
    report = usage_report(filled, [1], prices=book)
    assert report.total.cost == D("0.00108")
    assert report.money(report.total.cost) == D("0.007776")


@pytest.mark.parametrize(
    ("sent", "status", "outcome", "state", "first_ok", "kind"),
    [
        (True, 200, "ok", "succeeded", True, "succeeded"),
        (True, 200, "ok", "succeeded", False, "duplicate"),
        (True, 200, "retry", "failed", False, "failed"),
        (True, 400, "permanent", "failed", False, "failed"),
        (True, None, "retry", "succeeded", False, "unknown"),
        (True, None, "retry", "failed", False, "unknown"),
        (False, None, "retry", "failed", False, "failed"),  # never sent: not unknown, and not billed
        (True, 200, "retry", "succeeded", False, "other"),  # a 200 whose body was unusable
        (True, 200, "ok", "running", True, "other"),  # not stored yet
        (True, 200, "ok", "cancelled", True, "other"),
    ],
)
def test_attempt_kind(
    sent: bool, status: int | None, outcome: str, state: str, first_ok: bool, kind: str
) -> None:
    assert (
        attempt_kind(sent=sent, status_code=status, outcome=outcome, line_state=state, first_ok=first_ok)
        == kind
    )


@pytest.mark.parametrize(
    ("text", "dims"),
    [("job", ("job",)), ("day, model", ("day", "model")), ("metadata.team", ("metadata.team",))],
)
def test_parse_by(text: str, dims: tuple[str, ...]) -> None:
    assert parse_by(text) == dims


@pytest.mark.parametrize("text", ["", "week", "day,colour"])
def test_parse_by_refuses_unknown_dimensions(text: str) -> None:
    with pytest.raises(ConfigError, match=r"metadata\.KEY"):
        parse_by(text)


def test_by_family_names_the_unit_each_family_is_billed_in(filled: Store) -> None:
    by_family = _rows(usage_report(filled, None, by="family", prices=default_book()))
    assert set(by_family) == {("chat (tokens)",), ("speech (characters)",)}


def test_a_packed_call_is_one_row_priced_once_for_all_its_lines(store: Store) -> None:
    """Its row carries the whole call's tokens: counted once, not once per line it carried."""
    job = _job(store, "pack.jsonl", {})
    with store.session() as s:
        rows = [{"job_id": job, "custom_id": f"p{i}", "line_no": i, "endpoint": "/v1/embeddings",
                 "model": "text-embedding-3-small", "body": '{"input": "x"}', "est_tokens": 3} for i in range(3)]  # fmt: skip
        q.insert_requests(s, rows)
        ids = sorted(r.id for r in q.iter_lines(s, job))
        call = AttemptRecord(ids[0], job, 1, DAY1, 10, 200, "ok", "ok", usage=Usage(900_000, 0, 900_000),
                             call_id="pack", carried=tuple((rid, 1) for rid in ids))  # fmt: skip
        q.record_attempts(s, [call])
        q.record_results(
            s, [LineResult(rid, job, "succeeded", usage=Usage(300_000, 0, 300_000)) for rid in ids]
        )
        assert q.usage_totals(s, job).calls == 1
        [by_model] = q.usage_by_model(s, job)
        assert (by_model.calls, by_model.usage.prompt_tokens) == (1, 900_000)
        assert [line.attempts for line in q.iter_lines(s, job)] == [1, 1, 1]
    t = usage_report(store, [job], by="job", prices=default_book()).total
    assert (t.calls, t.billed_calls, t.tokens["succeeded"].prompt_tokens) == (1, 1, 900_000)
    assert t.cost == D("0.018")  # 0.9M tokens at $0.02 per 1M
