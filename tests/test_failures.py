"""`batcher errors`, the failure lines of `status` and the exit-3 summary: what failed, where, what next."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcher.failures import Remedy, remedy_for
from jobs.db import Store
from tests.helpers import batch_line, invoke, write_jsonl


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("rate_limited", 429, Remedy.RETRY), ("server_error", 503, Remedy.RETRY), ("timeout", None, Remedy.RETRY),
        ("max_attempts", None, Remedy.RETRY), ("bad_body", 200, Remedy.RETRY),
        ("invalid_request_error", 400, Remedy.FIX_INPUT), ("context_length_exceeded", 400, Remedy.FIX_INPUT),
        ("too_large", 413, Remedy.FIX_INPUT), ("auth", 401, Remedy.CHECK_KEY), ("quota", 429, Remedy.CHECK_KEY),
        ("not_found", 404, Remedy.CHECK_MODEL), ("model_not_found", 400, Remedy.CHECK_MODEL),
        ("poison_line", None, Remedy.INSPECT),
    ],
)  # fmt: skip
def test_remedy_for(code: str, status: int | None, expected: Remedy) -> None:
    assert remedy_for(code, status) is expected


def _chat(i: int, text: str) -> dict[str, object]:
    return batch_line(
        f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": text}]}
    )


def _failing_run(tmp_path: Path) -> tuple[int, str, Path]:
    rows = [_chat(0, "fine"), _chat(1, "[[fault:400]] a"), _chat(2, "ok"), _chat(3, "[[fault:400]] b")]
    rows += [_chat(4, "[[fault:503]] c")]
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out), "--max-attempts", "2"
    )
    return result.exit_code, result.stderr, out


def test_run_exit_3_says_where_the_failed_lines_are(env: str, db: Store, tmp_path: Path) -> None:
    code, stderr, out = _failing_run(tmp_path)
    assert code == 3
    assert f'3 lines failed: they are in {out} with an "error"; `batcher errors 1` groups them' in stderr


def test_errors_groups_failures_with_next_steps(env: str, db: Store, tmp_path: Path) -> None:
    _failing_run(tmp_path)
    result = invoke("errors", "1")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith("job 1: 3 failed lines\n\n2 × invalid_request_error (HTTP 400): ")
    assert "  lines: c1 (line 2), c3 (line 4)\n  next: the API refused these lines as written" in text
    assert "\n\n1 × server_error (HTTP 503): " in text
    assert "`batcher retry 1`, then `batcher run-job 1`" in text


def test_errors_json_and_limit(env: str, db: Store, tmp_path: Path) -> None:
    _failing_run(tmp_path)
    data = json.loads(invoke("errors", "1", "--json", "--limit", "1").stdout)
    assert data["failed"] == 3
    [group] = data["groups"]
    assert (group["count"], group["status_code"], group["remedy"]) == (2, 400, "fix_input")
    assert group["first"] == [{"custom_id": "c1", "line": 2}, {"custom_id": "c3", "line": 4}]
    assert "raise --limit" in invoke("errors", "1", "--limit", "1").stdout


def test_errors_of_a_job_without_failures(env: str, db: Store, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [_chat(0, "fine")])
    assert invoke("run", str(source), "-o", str(tmp_path / "o.jsonl")).exit_code == 0
    assert invoke("errors", "1").stdout == "job 1: no failed lines\n"


def test_status_shows_failures_by_code_cost_and_the_command(env: str, db: Store, tmp_path: Path) -> None:
    _failing_run(tmp_path)
    text = invoke("status", "1").stdout
    assert "failed by error: invalid_request_error 2, " in text
    assert "see them with `batcher errors 1`" in text
    data = json.loads(invoke("status", "1", "--json").stdout)
    assert data["failures"]["invalid_request_error"] == 2
    assert sum(data["failures"].values()) == 3


def test_status_shows_cost_so_far_for_priced_models(env: str, db: Store, tmp_path: Path) -> None:
    rows = [
        batch_line(
            "c",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    ]
    assert (
        invoke(
            "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(tmp_path / "o.jsonl")
        ).exit_code
        == 0
    )
    assert "cost so far: $0.0000 (`batcher usage 1` for the account)" in invoke("status", "1").stdout
    cost = json.loads(invoke("status", "1", "--json").stdout)["cost_usd"]
    assert cost is not None and float(cost) > 0
