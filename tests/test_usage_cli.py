"""The usage and estimate commands over a tiny group: help, output formats, chart, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from batcher.cli.base import App
from batcher.cli.usage import estimate, usage
from jobs.db import Store
from jobs.records import Usage
from jobs.settings import load_settings
from tests.test_usage import _job, _line

COMMANDS = {"usage": usage, "estimate": estimate}


def _group(store: Store | None) -> click.Group:
    @click.group()
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = App(settings=load_settings(), _store=store)

    for command in COMMANDS.values():
        group.add_command(command)
    return group


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    one = _job(store, "nightly.jsonl", {"tag": "nightly"})
    _line(store, one, "a", [(200, "ok", Usage(1000, 500, 1500))], state="succeeded")
    _line(store, one, "e", [(None, "retry", None)], state="failed", est_tokens=3000)
    _line(store, one, "f", [(200, "ok", Usage(10, 5, 15))], state="succeeded", model="mystery-model")
    return store


def run(store: Store | None, *args: str) -> Result:
    return CliRunner().invoke(_group(store), list(args), catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = run(None, name, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output
    assert (COMMANDS[name].help or "").strip().splitlines()[0]


def test_usage_table_with_notes(sqlite_store: Store) -> None:
    result = run(sqlite_store, "usage", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "job",
        "calls",
        "in",
        "tok",
        "out",
        "tok",
        "cost",
        "USD",
        "unknown",
        "≤",
        "USD",
    ]
    assert lines[2].split()[:4] == ["1:nightly.jsonl", "3", "1010", "505"]
    # a: 1000 × 0.15/1M + 500 × 0.60/1M = 0.00045; e: at most 3000 × 0.60/1M = 0.0018
    assert (
        "spend: 0.000450 USD confirmed + at most 0.001800 USD for 1 calls sent with no answer"
        in result.output
    )
    assert "no price for mystery-model" in result.output
    assert '[models."mystery-model"]' in result.output


def test_usage_json_keeps_exact_money(sqlite_store: Store) -> None:
    result = run(
        sqlite_store, "usage", "--by", "model", "--format", "json", "--currency", "CNY", "--rate", "7.2"
    )
    data = json.loads(result.output)
    assert data["currency"] == "CNY"
    assert data["total"]["cost"] == "0.003240"  # 0.00045 × 7.2
    assert [r["model"] for r in data["rows"]] == ["gpt-4o-mini", "mystery-model"]
    assert data["total"]["unpriced_models"] == ["mystery-model"]


def test_usage_csv_has_a_total_row(sqlite_store: Store) -> None:
    result = run(sqlite_store, "usage", "--format", "csv", "--by", "model")
    rows = result.output.splitlines()
    assert rows[0].startswith("model,calls,billed_calls,unknown_calls,succeeded_prompt")
    assert rows[-1].startswith("total,3,2,1,")


def test_usage_plot_writes_a_png(sqlite_store: Store, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "cost.png"
    result = run(sqlite_store, "usage", "--plot", str(chart))
    assert result.exit_code == 0
    assert chart.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "week"], "cannot group by week"),
        (["--currency", "CNY"], "--currency and --rate go together"),
        (["--rate", "-1", "--currency", "CNY"], "must be a positive number"),
        (["--since", "yesterday"], "does not match the format"),
    ],
)
def test_usage_errors_are_usage_errors(sqlite_store: Store, args: list[str], message: str) -> None:
    result = CliRunner().invoke(_group(sqlite_store), ["usage", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_estimate_command(tmp_path: Path) -> None:
    pytest.importorskip("batcher.reader")
    path = tmp_path / "in.jsonl"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}
    path.write_text(
        json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
    )
    result = run(None, "estimate", str(path), "--json")
    data = json.loads(result.output)
    assert data["models"][0]["output_tokens"] == 100


def test_unpriced_model_row_says_no_price(sqlite_store: Store) -> None:
    result = run(sqlite_store, "usage", "--by", "model")
    rows = {line.split()[0]: line for line in result.output.splitlines()[2:5]}
    assert rows["mystery-model"].split()[-3:] == ["no", "price", "0.000000"]
    assert "0.000450 + no price" in rows["total"]


def test_usage_default_table_fits_100_columns_and_wide_shows_every_column(sqlite_store: Store) -> None:
    for by in ("job", "model", "day,model", "endpoint,model"):
        table = run(sqlite_store, "usage", "--by", by).output.split("\n\n")[0]
        assert max(len(line) for line in table.splitlines()) <= 100, by
    wide = run(sqlite_store, "usage", "--wide").output.splitlines()[0].split()
    assert wide[:3] == ["job", "calls", "billed"]
    assert "succeeded" in wide and "duplicate" in wide


def test_usage_of_an_unknown_job_says_so(sqlite_store: Store) -> None:
    result = CliRunner().invoke(_group(sqlite_store), ["usage", "999"])
    assert result.exit_code == 1
    assert "no job 999" in str(result.exception) + result.output


def test_usage_calls_are_upstream_calls(env: str, tmp_path: Path) -> None:
    """Four embedding lines packed into one call are one call, not four."""
    from tests.helpers import batch_line, invoke, write_jsonl

    rows = [
        batch_line(f"e{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": f"t{i}"})
        for i in range(4)
    ]
    assert (
        invoke(
            "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(tmp_path / "o.jsonl")
        ).exit_code
        == 0
    )
    data = json.loads(invoke("usage", "1", "--format", "json").stdout)
    assert (data["total"]["calls"], data["total"]["billed_calls"]) == (1, 1)
    assert data["total"]["tokens"]["succeeded"]["prompt"] > 0
