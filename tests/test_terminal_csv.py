"""Text from files and relays is shown, never obeyed: terminal escapes and CSV formulas (issue 11, 3)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from batcher.devrelay import RelayServer
from batcher.export import csv_safe
from batcher.render import printable
from tests.helpers import RELAY_KEY, batch_line, invoke, write_jsonl


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain 你好", "plain 你好"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("bell\x07 and \x9b csi", "bell\\x07 and \\x9b csi"),
        ("evil\u202etxt", "evil\\u202etxt"),
        ("two\nlines\tkept", "two\nlines\tkept"),
        ("cr\rback", "cr\\x0dback"),
    ],
)
def test_printable_table(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM", "'@SUM"),
        ("ok", "ok"),
        (-3, -3),
    ],
)
def test_csv_safe_table(value: object, cell: object) -> None:
    assert csv_safe(value) == cell


def test_validate_and_run_escape_control_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # never called: the file is refused
    bad = batch_line("id\x1b]0;owned\x07", "/v1/chat\x1b[2J", {"model": "m", "messages": []})
    src = write_jsonl(tmp_path / "in.jsonl", [bad])
    for args in (["validate", str(src)], ["run", str(src)]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "\\x1b[2J" in result.output


def test_csv_export_cells_are_not_formulas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay: RelayServer
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
    monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [batch_line("=cmd|' /C calc'!A0", "/v1/chat/completions", body)])
    out = tmp_path / "out.csv"
    invoke("run", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert invoke("export", "1", "-o", str(out), "--format", "csv").exit_code == 0
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][0] == "'=cmd|' /C calc'!A0"
