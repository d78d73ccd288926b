"""`batcher export`: what it says about the files it did not write itself (speech audio)."""

from __future__ import annotations

from pathlib import Path

from batcher.export import audio_note
from jobs.db import Store
from jobs.store import AudioFiles
from tests.helpers import batch_line, invoke, read_jsonl, write_jsonl


def _speech_job(tmp_path: Path) -> Path:
    body = {"model": "tts-1", "input": "hello", "voice": "alloy", "response_format": "wav"}
    source = write_jsonl(tmp_path / "speech.jsonl", [batch_line("t1", "/v1/audio/speech", body)])
    assert invoke("run", str(source), "-o", str(tmp_path / "first.jsonl")).exit_code == 0
    return source


def test_export_says_where_the_audio_files_are(env: str, db: Store, tmp_path: Path) -> None:
    _speech_job(tmp_path)
    result = invoke("export", "1", "-o", str(tmp_path / "out.jsonl"))
    folder = Path(read_jsonl(tmp_path / "out.jsonl")[0]["response"]["body"]["audio_path"]).parent
    assert f"1 audio files are in {folder} (the audio_path of each line)\n" in result.stderr
    assert "not on this machine" not in result.stderr


def test_export_says_when_the_audio_folder_is_elsewhere(env: str, db: Store, tmp_path: Path) -> None:
    """As with docker compose: the workers wrote /data/results/job-N, the host has ./results."""
    _speech_job(tmp_path)
    folder = Path(read_jsonl(tmp_path / "first.jsonl")[0]["response"]["body"]["audio_path"]).parent
    folder.rename(tmp_path / "moved")
    result = invoke("export", "1", "-o", str(tmp_path / "out.csv"), "--format", "csv")
    assert f"{folder} is not on this machine" in result.stderr
    assert "./results/job-1 beside docker-compose.yml" in result.stderr


def test_audio_note_is_silent_without_audio() -> None:
    assert audio_note(AudioFiles(0, None)) is None
