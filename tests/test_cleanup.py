"""`batcher delete` and `batcher prune`: lines, attempts, result files; asked first unless --yes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from batcher.cleanup import parse_age
from batcher.cli import cli
from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.models import utcnow
from tests.helpers import all_attempts, all_lines, batch_line, invoke, write_jsonl


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2)),
     ("90m", timedelta(minutes=90)), (" 7D ", timedelta(days=7))],
)  # fmt: skip
def test_parse_age(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "-1d", "1y", "1.5d"])
def test_parse_age_refuses_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. 30d"):
        parse_age(text)


def _run_job(tmp_path: Path, name: str) -> int:
    speech = {"model": "tts-1", "input": f"hello {name}", "voice": "alloy", "response_format": "wav"}
    chat = {"model": "m", "messages": [{"role": "user", "content": name}]}
    rows = [batch_line("t", "/v1/audio/speech", speech), batch_line("c", "/v1/chat/completions", chat)]
    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    result = invoke("run", str(source), "-o", str(tmp_path / f"{name}.out.jsonl"))
    assert result.exit_code == 0, result.stderr
    return int(result.stderr.split("job ")[1].split(":")[0])


def _audio_files(home: Path) -> list[Path]:
    return sorted((home / "results").rglob("*.wav"))


def _ask(*args: str, answer: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=answer, catch_exceptions=False)
    return result.exit_code, result.stderr


def test_delete_asks_and_no_keeps_everything(env: str, db: Store, tmp_path: Path, isolated_env: Path) -> None:
    _run_job(tmp_path, "a")
    code, stderr = _ask("delete", "1", answer="n\n")
    assert code == 1
    assert "delete 1 jobs with 2 lines, 2 attempts and their files? [y/N]" in stderr
    assert len(all_lines(db)) == 2 and len(_audio_files(isolated_env)) == 1


def test_delete_removes_lines_attempts_and_files(
    env: str, db: Store, tmp_path: Path, isolated_env: Path
) -> None:
    first, second = _run_job(tmp_path, "a"), _run_job(tmp_path, "b")
    code, stderr = _ask("delete", str(first), answer="y\n")
    assert code == 0, stderr
    assert "deleted 1 jobs: 2 lines, 2 attempts, 1 files" in stderr
    assert {line.job_id for line in all_lines(db)} == {second}
    assert {a.job_id for a in all_attempts(db)} == {second}
    folders = [p.parent.name for p in _audio_files(isolated_env)]
    assert len(folders) == 1 and folders[0].startswith(f"job-{second}")
    assert not [f for f in (isolated_env / "results").iterdir() if f.name.startswith(f"job-{first}")]
    assert "no job 1" in invoke("status", str(first)).stderr


def test_delete_takes_the_embedding_vectors_too(env: str, db: Store, tmp_path: Path) -> None:
    import sqlalchemy as sa

    rows = [batch_line(f"e{i}", "/v1/embeddings", {"model": "e", "input": f"t{i}"}) for i in range(3)]
    assert (
        invoke(
            "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(tmp_path / "o.jsonl")
        ).exit_code
        == 0
    )
    with db.session() as session:
        assert session.connection().execute(sa.text("SELECT count(*) FROM vector_block")).scalar_one() > 0
    assert invoke("delete", "1", "--yes").exit_code == 0
    with db.session() as session:
        assert session.connection().execute(sa.text("SELECT count(*) FROM vector_block")).scalar_one() == 0


def test_delete_refuses_a_running_job(env: str, db: Store, tmp_path: Path) -> None:
    rows = [
        batch_line(
            "c", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
    ]
    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue").exit_code == 0
    with db.session() as session:
        q.start_job(session, 1)
    result = invoke("delete", "1", "--yes")
    assert result.exit_code == 1
    assert "job 1 is running; `batcher pause 1` or `batcher cancel 1` first" in result.stderr
    assert len(all_lines(db)) == 1


def test_prune_deletes_only_old_finished_jobs(env: str, db: Store, tmp_path: Path) -> None:
    old, recent = _run_job(tmp_path, "old"), _run_job(tmp_path, "new")
    with db.session() as session:
        job = q.get_job(session, old)
        job.finished_at = utcnow() - timedelta(days=40)
        session.add(job)
    assert "no job to prune" in invoke("prune", "--older-than", "30d", "--status", "paused", "--yes").stderr
    result = invoke("prune", "--older-than", "30d", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "deleted 1 jobs: 2 lines, 2 attempts, 1 files" in result.stderr
    assert {line.job_id for line in all_lines(db)} == {recent}


def test_prune_refuses_running_jobs_as_a_usage_error() -> None:
    result = invoke("prune", "--older-than", "1d", "--status", "running")
    assert result.exit_code == 2
    assert "running jobs cannot be pruned" in result.stderr
