"""The progress line: fits any width; live through a pseudo-terminal, plain lines through a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.progress import ProgressSnapshot, progress_line
from tests.helpers import RELAY_KEY, batch_line, write_jsonl

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SNAP = ProgressSnapshot(total=20000, done=2312, failed=3, lines_per_s=41.25, in_flight=32, label="job 9")


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 200])
def test_the_line_never_passes_the_width(width: int) -> None:
    assert len(progress_line(SNAP, width)) <= width


def test_a_wide_line_has_a_bar_and_every_field() -> None:
    line = progress_line(SNAP, 120)
    assert line.startswith("[###")
    assert line.endswith("job 9 · 2312/20000 12% · failed 3 · 41.2 lines/s · ETA 7m08s · in flight 32")


def test_a_narrow_line_drops_fields_from_the_right_before_the_counts() -> None:
    assert progress_line(SNAP, 40) == "job 9 · 2312/20000 12% · failed 3"


def test_the_plain_line_has_no_bar() -> None:
    assert (
        progress_line(SNAP) == "job 9 · 2312/20000 12% · failed 3 · 41.2 lines/s · ETA 7m08s · in flight 32"
    )
    done = ProgressSnapshot(total=5, done=5, failed=0, lines_per_s=2.0)
    assert progress_line(done) == "5/5 100% · failed 0 · 2.0 lines/s · ETA -"


def _job(tmp_path: Path, relay: RelayServer, n: int = 60) -> list[str]:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.1))
    rows = [batch_line(f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": str(i)}]})
            for i in range(n)]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    return [sys.executable, "-m", "batcher", "run", str(source), "-o", str(out), "--max-in-flight", "2"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_on_a_terminal_the_line_redraws_in_place_within_its_width(
    env: str, relay: RelayServer, tmp_path: Path
) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))  # 60 columns
    environ = os.environ | {"TERM": "xterm"}
    environ.pop("COLUMNS", None)
    proc = subprocess.Popen(_job(tmp_path, relay), stdin=slave, stdout=slave, stderr=slave, env=environ)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(master)
    raw = b"".join(chunks).decode(errors="replace")
    assert "\x1b[2K" in raw  # each redraw clears the line: no digits left over from a longer one
    visible = [ANSI.sub("", part) for line in raw.split("\n") for part in line.split("\r")]
    drawn = [part for part in visible if "job 1 · " in part]
    assert drawn and max(len(part) for part in drawn) <= 60, [p for p in drawn if len(p) > 60]
    rows = [line for line in raw.split("\n") if "job 1 · " in line]
    assert len(rows) == 1, rows  # one physical line, redrawn in place
    assert "job 1 · 60/60 100%" in ANSI.sub("", raw)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_through_a_pipe_a_plain_line_every_few_seconds(
    env: str, relay: RelayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHER_PROGRESS_INTERVAL", "0.3")
    proc = subprocess.run(
        _job(tmp_path, relay), capture_output=True, text=True, env=os.environ.copy(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr
    plain = re.compile(
        r"^job 1 · \d+/60 \d+% · failed \d+ · [\d.]+ lines/s · ETA \S+ · [\d.]+ req/s · .* · in flight \d+/\d+ of \d+ · 429s \d+"
    )
    lines = [line for line in proc.stderr.splitlines() if plain.match(line)]
    assert len(lines) >= 2, proc.stderr
    assert lines[-1].startswith("job 1 · 60/60 100%")
