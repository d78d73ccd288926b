"""`run` and `run-job`: the results file named at `run -o` is rewritten when the job goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs import store as q
from jobs.db import Store
from jobs.models import JobStatus
from tests.helpers import batch_line, invoke, read_jsonl, write_jsonl


def _rows(n: int) -> list[dict[str, object]]:
    return [
        batch_line(
            f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": str(i)}]}
        )
        for i in range(n)
    ]


def test_run_job_rewrites_the_export_of_run_o(env: str, db: Store, tmp_path: Path) -> None:
    """A `run -o` that stopped early leaves a partial file; `run-job` finishes the job and rewrites it."""
    out, failed = tmp_path / "results.jsonl", tmp_path / "failed.jsonl"
    source = write_jsonl(tmp_path / "in.jsonl", _rows(6))
    assert invoke("submit", str(source), "--no-queue").exit_code == 0
    with db.session() as session:  # as if `run -o` had been stopped after two lines
        q.update_options(session, 1, output=str(out), errors_output=str(failed))
    out.write_text("stale\n")
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    assert f"wrote 6 lines to {out}" in result.stderr
    assert [r["custom_id"] for r in read_jsonl(out)] == [f"c{i}" for i in range(6)]
    assert failed.read_text() == ""


def test_run_stores_its_output_and_run_job_o_changes_it(env: str, db: Store, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", _rows(2))
    first = tmp_path / "first.jsonl"
    assert invoke("run", str(source), "-o", str(first)).exit_code == 0
    with db.session() as session:
        assert q.job_options(session, 1).output == str(first.resolve())
        job = q.get_job(session, 1)
        job.status = JobStatus.PAUSED
        session.add(job)
    second = tmp_path / "second.jsonl"
    result = invoke("run-job", "1", "-o", str(second))
    assert result.exit_code == 0, result.stderr
    assert len(read_jsonl(second)) == 2
    with db.session() as session:
        assert q.job_options(session, 1).output == str(second.resolve())


def test_run_job_without_a_stored_output_exports_nothing(env: str, db: Store, tmp_path: Path) -> None:
    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", _rows(1))), "--no-queue").exit_code == 0
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    assert "wrote" not in result.stderr


def test_validate_of_an_empty_file_exits_1_as_run_does(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = invoke("validate", str(empty))
    assert result.exit_code == 1
    assert "has no request lines" in result.stderr


def test_submit_compares_the_estimate_with_the_balance_from_one_read_of_the_file(
    env: str, db: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warning's estimate is ingest's own: the input file is read once, not again to estimate."""
    import batcher.estimate
    import batcher.ingest

    reads: list[Path] = []

    def counting(original: Any) -> Any:
        def read(path: Path, *args: Any, **kwargs: Any) -> Any:
            reads.append(path)
            return original(path, *args, **kwargs)

        return read

    for module in (batcher.ingest, batcher.estimate):
        monkeypatch.setattr(module, "read_requests", counting(module.read_requests))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    rows = [batch_line(f"c{i}", "/v1/chat/completions", body) for i in range(200)]  # $200 of output
    result = invoke("submit", str(write_jsonl(tmp_path / "big.jsonl", rows)), "--no-queue")
    assert result.exit_code == 0, result.stderr
    assert "more than the relay's balance ($100.00)" in result.stderr
    assert len(reads) == 1
