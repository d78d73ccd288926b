"""Job options: one typed model, stored as JSON text, read back and updated through the store."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs import store as q
from jobs.db import Store
from jobs.options import PLACEMENTS, JobOptions, RunMode
from tests.helpers import batch_line, invoke, write_jsonl


def test_defaults_are_stored_as_an_empty_object() -> None:
    assert JobOptions().to_json() == "{}"


def test_only_options_that_differ_from_the_defaults_are_stored() -> None:
    options = JobOptions(rpm=100, pack=False, max_attempts=5, budget=Decimal("2.50"))
    assert json.loads(options.to_json()) == {"budget": "2.50", "pack": False, "rpm": 100.0}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("", JobOptions()),
        ("{}", JobOptions()),
        ('{"budget": "0.1"}', JobOptions(budget=Decimal("0.1"))),
        ('{"budget": 3}', JobOptions(budget=Decimal(3))),  # an older job's number
        ('{"rpm": 60, "an_option_of_a_later_version": 1}', JobOptions(rpm=60)),
        (
            '{"metadata": {"team": "search"}, "tag": "nightly"}',
            JobOptions(tag="nightly", metadata={"team": "search"}),
        ),
    ],
)
def test_stored_text_reads_back(stored: str, expected: JobOptions) -> None:
    assert JobOptions.from_json(stored) == expected


def test_budget_round_trips_exactly() -> None:
    budget = JobOptions.from_json(JobOptions(budget=Decimal("0.1")).to_json()).budget
    assert budget == Decimal("0.1")
    assert isinstance(budget, Decimal)


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"rpm": -1}, {"budget": "0"}, {"max_attempts": 0}])
def test_out_of_range_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobOptions.model_validate(bad)


def test_merged_applies_given_values_and_keeps_the_rest() -> None:
    stored = JobOptions(rpm=100, concurrency=8, tag="t")
    merged = stored.merged(concurrency=64, rpm=None, timeout=30.0)
    assert merged == JobOptions(rpm=100, concurrency=64, tag="t", timeout=30.0)
    assert stored.concurrency == 8  # the stored options are not changed


def test_merged_validates_the_changes() -> None:
    with pytest.raises(ValidationError):
        JobOptions().merged(concurrency=0)


@pytest.mark.parametrize("mode", list(RunMode))
def test_concurrency_defaults_to_the_placement_unless_chosen(mode: RunMode) -> None:
    assert JobOptions().concurrency_in(mode) == PLACEMENTS[mode].concurrency
    assert JobOptions(concurrency=7).concurrency_in(mode) == 7


def test_placements_differ_where_the_docstring_says() -> None:
    embedded, worker = PLACEMENTS[RunMode.EMBEDDED], PLACEMENTS[RunMode.CELERY]
    assert (embedded.concurrency, embedded.lease_seconds) == (256, 300.0)
    assert (worker.concurrency, worker.lease_seconds) == (256, 60.0)


def test_store_creates_reads_and_updates_options(store: Store) -> None:
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t", source_sha256="x", options=JobOptions(rpm=10))
        assert job.id is not None
        job_id = job.id
    with store.session() as s:
        updated = q.update_options(s, job_id, budget=Decimal("5"), rpm=None)
    assert updated == JobOptions(rpm=10, budget=Decimal("5"))
    with store.session() as s:
        assert q.job_options(s, job_id) == updated
        assert json.loads(q.get_job(s, job_id).options) == {"budget": "5", "rpm": 10.0}


def _input(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )


def test_submit_stores_flags_and_accounting_once(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text("[models.m]\ninput = 1.0\n", encoding="utf-8")
    result = invoke(
        "submit", str(_input(tmp_path)), "--no-queue", "--concurrency", "4", "--budget", "0.10",
        "--prices", str(prices), "--tag", "nightly", "--metadata", "team=search",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    jobs = json.loads(invoke("jobs", "--json").stdout)
    assert jobs[0]["options"] == {
        "budget": "0.10",
        "concurrency": 4,
        "metadata": {"team": "search"},
        "prices": [str(prices.resolve())],
        "tag": "nightly",
    }


@pytest.mark.parametrize("bad", ["0", "-1", "ten", "nan"])
def test_budget_flag_refuses_what_is_not_an_amount(tmp_path: Path, bad: str) -> None:
    result = invoke("submit", str(_input(tmp_path)), "--no-queue", "--budget", bad)
    assert result.exit_code == 2
    assert "--budget" in result.stderr
