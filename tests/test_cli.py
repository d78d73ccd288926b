"""The command line: help everywhere, exit codes, JSON output, clean domain errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batcher.cli import EXIT_ERROR, EXIT_USAGE, cli
from tests.helpers import batch_line, invoke, write_jsonl


def all_commands() -> list[str]:
    return sorted(cli.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert (cli.commands[name].help or "").strip().splitlines()[0]


def test_usage_error_exits_2() -> None:
    result = CliRunner().invoke(cli, ["export", "1"])  # -o is required
    assert result.exit_code == EXIT_USAGE


def test_unknown_job_exits_1_with_next_step() -> None:
    result = invoke("status", "77")
    assert result.exit_code == EXIT_ERROR
    assert "no job 77" in result.stderr
    assert "batcher jobs" in result.stderr


def test_validate_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a"}\nnot json\n', encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == EXIT_ERROR
    assert "in.jsonl:1:" in result.stdout
    assert "in.jsonl:2:" in result.stdout


def test_submit_refuses_a_file_mixing_task_lines_with_other_routes(tmp_path: Path) -> None:
    rows = [
        batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"}),
        batch_line("cat", "/mj/submit/imagine", {"prompt": "a cat"}),
    ]
    result = invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue")
    assert result.exit_code == EXIT_ERROR
    assert 'in.jsonl:2: "url" /mj/submit/imagine is a task route' in result.stderr, result.stderr
    assert "submit the task lines as their own file" in result.stderr
    assert json.loads(invoke("jobs", "--json").stdout) == []  # nothing stored


def test_validate_good_file_exits_0(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert "1 valid lines, 0 invalid" in result.stderr


def test_submit_no_queue_json_then_jobs_and_status_json(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [batch_line(f"a{i}", "/v1/embeddings", {"model": "m", "input": "x"}) for i in range(3)],
    )
    result = invoke("submit", str(path), "--no-queue", "--json", "--rpm", "100")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "job_id": 1,
        "created": True,
        "stored": 3,
        "rejected": 0,
        "rejects_path": None,
        "enqueued": None,
    }
    jobs = json.loads(invoke("jobs", "--json").stdout)
    assert [j["id"] for j in jobs] == [1]
    assert jobs[0]["options"] == {"rpm": 100.0}
    status = json.loads(invoke("status", "1", "--json").stdout)
    assert status["counts"]["pending"] == 3
    assert status["status"] == "queued"


def test_submit_skip_invalid_writes_rejects_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    good = json.dumps(batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"}))
    path.write_text(f"{good}\n{{broken\n", encoding="utf-8")
    result = invoke("submit", str(path), "--no-queue", "--skip-invalid", "--json")
    data = json.loads(result.stdout)
    assert (data["stored"], data["rejected"]) == (1, 1)
    [reject] = [json.loads(x) for x in Path(data["rejects_path"]).read_text().splitlines()]
    assert reject["line"] == 2
    assert reject["raw"] == "{broken"
    assert reject["errors"]


def test_cancel_and_retry_messages(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )
    invoke("submit", str(path), "--no-queue")
    assert invoke("retry", "1").stdout.strip() == "job 1: 0 failed lines are pending again"
    assert "1 lines will not run" in invoke("cancel", "1").stdout
    again = invoke("cancel", "1")
    assert again.exit_code == EXIT_ERROR
    assert "already cancelled" in again.stderr


def test_run_without_base_url_says_what_to_set(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )
    result = invoke("run", str(path))
    assert result.exit_code == EXIT_ERROR
    assert "OPENAI_BASE_URL" in result.stderr


def test_submit_dry_run_estimates_and_stores_nothing(tmp_path: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
    path = write_jsonl(tmp_path / "in.jsonl", [batch_line("a", "/v1/chat/completions", body)])
    result = invoke("submit", str(path), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)  # the estimate, as JSON
    assert "nothing was stored" in result.stderr
    assert json.loads(invoke("jobs", "--json").stdout) == []


def test_submit_with_the_broker_down_keeps_the_job_and_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHER_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    path = write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )
    result = invoke("submit", str(path))
    assert result.exit_code == EXIT_ERROR
    assert "cannot reach the broker" in result.stderr
    assert "batcher run-job" in result.stderr
    assert "`batcher resume 1`" in result.stderr  # the job's own id, not a placeholder
    jobs = json.loads(invoke("jobs", "--json").stdout)
    assert [j["total"] for j in jobs] == [1]  # stored, ready for run-job or resume
    assert jobs[0]["status"] == "queued"  # not "running" with nothing enqueued
