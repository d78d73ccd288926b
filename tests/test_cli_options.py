"""Option bundles: calls in flight are ``--max-in-flight``, worker processes ``--processes``; the
old ``--concurrency`` still works for both, hidden and with a warning; help and README agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batcher.cli.options import MAX_IN_FLIGHT_HELP
from tests.helpers import batch_line, invoke, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "in.jsonl", [batch_line("a", "/v1/embeddings", {"model": "m", "input": "x"})]
    )


def _stored_options(tmp_path: Path, *args: str) -> tuple[dict[str, object], str]:
    result = invoke("submit", str(_file(tmp_path)), "--no-queue", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(invoke("jobs", "--json").stdout)[0]["options"], result.stderr


def test_max_in_flight_is_stored_with_the_job(tmp_path: Path) -> None:
    options, stderr = _stored_options(tmp_path, "--max-in-flight", "9")
    assert options == {"concurrency": 9}
    assert "deprecated" not in stderr


def test_old_concurrency_name_still_works_and_warns(tmp_path: Path) -> None:
    options, stderr = _stored_options(tmp_path, "--concurrency", "7")
    assert options == {"concurrency": 7}
    assert "--concurrency" in stderr and "deprecated" in stderr and "--max-in-flight" in stderr


@pytest.mark.parametrize("command", ["run", "submit", "run-job"])
def test_run_commands_show_max_in_flight_not_concurrency(command: str) -> None:
    text = invoke(command, "--help").stdout
    assert "--max-in-flight" in text
    assert "--concurrency" not in text


def test_worker_help_shows_processes_and_hostname() -> None:
    text = invoke("worker", "--help").stdout
    assert "--processes" in text and "--hostname" in text
    assert "--concurrency" not in text


def test_readme_gives_the_defaults_the_help_gives() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    defaults = re.search(r"\[default: ([^\]]+)\]", MAX_IN_FLIGHT_HELP)
    assert defaults is not None and defaults.group(1) == "256"
    assert (
        "`--max-in-flight` (the most calls in flight, default 256 in-process and per worker chunk" in readme
    )
    assert "`batcher worker [--processes N] [--hostname NAME]" in readme
    assert "--concurrency" not in readme.replace("the old name `--concurrency`", "").replace(
        "benchmarks.client_overhead --requests 5000 --concurrency", ""
    )


@pytest.mark.parametrize(
    ("flags", "stored"),
    [((), None), (("--no-cache",), "off"), (("--cache-all",), "all"), (("--cache",), None)],
)
def test_cache_flags_are_stored_with_the_job(
    tmp_path: Path, flags: tuple[str, ...], stored: str | None
) -> None:
    options, _ = _stored_options(tmp_path, *flags)
    assert options.get("cache") == stored  # "auto", the default, is not stored


def test_cache_all_with_no_cache_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("submit", str(_file(tmp_path)), "--no-queue", "--cache-all", "--no-cache")
    assert result.exit_code == 2
    assert "--cache-all and --no-cache" in result.stderr
