"""Answers that are not what they seem, from the stand-in relay's gateway faults (issue 11, 9-14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayServer
from jobs.db import Store
from tests.helpers import all_attempts, all_lines, batch_line, invoke, write_jsonl
from workers.audio_check import audio_problem
from workers.blame import blames_the_call
from workers.retry import Classification, Verdict

pytestmark = pytest.mark.slow


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def run(tmp_path: Path, rows: list[dict[str, Any]], *args: str) -> int:
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    return invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), *args).exit_code


def test_zero_usage_is_estimated_and_flagged(env: str, db: Store, relay: RelayServer, tmp_path: Path) -> None:
    rows = [batch_line("z", "/v1/chat/completions", chat("hello there [[fault:zero_usage]]"))]
    rows.append(batch_line("e", "/v1/embeddings", {"model": "e", "input": "words [[fault:zero_usage]]"}))
    assert run(tmp_path, rows) == 0
    for line in all_lines(db):
        assert line.usage_estimated, line.custom_id
        assert (line.prompt_tokens or 0) > 0, line.custom_id


def test_error_body_sent_as_audio_is_not_saved_as_audio(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    speech = {"model": "tts-1", "voice": "alloy", "input": "hi [[fault:error_audiox2]]"}
    rows = [batch_line("t", "/v1/audio/speech", speech)]
    assert run(tmp_path, rows, "--max-attempts", "3") == 0
    [line] = all_lines(db)
    assert line.audio_path is not None
    assert Path(line.audio_path).read_bytes().startswith(b"ID3")
    assert [a.error_class for a in all_attempts(db)] == ["error_in_200", "error_in_200", "ok"]


@pytest.mark.parametrize(
    ("body", "fmt", "ok"),
    [
        (b"ID3\x04" + b"\x00" * 20, "mp3", True),
        (b"\xff\xfb\x90\x64" + b"\x00" * 20, "mp3", True),
        (b'{"error": {"message": "x"}}', "mp3", False),
        (b"OggS" + b"\x00" * 20, "opus", True),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav", True),
        (b"RIFF\x24\x00\x00\x00AVI LIST", "wav", False),
        (b"fLaC" + b"\x00" * 20, "flac", True),
        (b"\x01\x02", "pcm", False),
        (b"\x01\x02" * 10, "pcm", True),
    ],
)
def test_audio_problem_table(body: bytes, fmt: str, ok: bool) -> None:
    assert (audio_problem(body, fmt) is None) == ok


def test_a_pack_naming_a_missing_model_fails_whole_in_one_call(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [
        batch_line(f"e{i}", "/v1/embeddings", {"model": "nope", "input": f"t{i} [[fault:model404]]"})
        for i in range(40)
    ]
    assert run(tmp_path, rows) == 3
    assert relay.stats()["calls"] == 1
    assert {(ln.state, ln.error_code) for ln in all_lines(db)} == {("failed", "model_not_found")}


def c(message: str, code: str | None = None) -> Classification:
    return Classification(Verdict.PERMANENT, "bad_request", message, code)


@pytest.mark.parametrize(
    ("classification", "status", "whole"),
    [
        (c("404 model_not_found: The model `x` does not exist", "model_not_found"), 404, True),
        (c("400: Invalid model name passed in model=text-embedding-x"), 400, True),
        (c("400: 模型 xx 不存在"), 400, True),
        (c("400: This model's maximum context length is 8192 tokens"), 400, False),
        (c("400: input[3] is empty"), 400, False),
        (c("404: Invalid URL (POST /v1/embedding)"), 404, True),
    ],
)
def test_blames_the_call_table(classification: Classification, status: int, whole: bool) -> None:
    assert blames_the_call(classification, status) == whole


def test_overload_inside_a_200_is_a_rate_limit(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    rows = [batch_line("o", "/v1/chat/completions", chat("busy [[fault:overload200x2]]"))]
    assert run(tmp_path, rows, "--max-attempts", "5") == 0
    assert [a.error_class for a in all_attempts(db)] == ["rate_limited", "rate_limited", "ok"]
