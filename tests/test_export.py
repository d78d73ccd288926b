"""`batcher export`: compressed as the name says, never a partial file, and what it says about
the files it did not write itself (speech audio)."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from batcher.export import ExportFormat, audio_note, export_job
from batcher.outfile import open_text
from jobs.db import Store
from jobs.store import AudioFiles
from tests.helpers import batch_line, emb, finished_job, invoke, read_jsonl, write_jsonl


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
    """As with docker compose: the workers wrote /data/results/job-N-<created>, the host has ./results."""
    _speech_job(tmp_path)
    folder = Path(read_jsonl(tmp_path / "first.jsonl")[0]["response"]["body"]["audio_path"]).parent
    folder.rename(tmp_path / "moved")
    result = invoke("export", "1", "-o", str(tmp_path / "out.csv"), "--format", "csv")
    assert f"{folder} is not on this machine" in result.stderr
    assert f"./results/{folder.name} beside docker-compose.yml" in result.stderr
    assert folder.name.startswith("job-1-")


def test_audio_note_is_silent_without_audio() -> None:
    assert audio_note(AudioFiles(0, None)) is None


@pytest.fixture
def store_db(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        yield store


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.jsonl.zst"])
def test_jsonl_export_is_compressed_as_its_name_says(store_db: Store, tmp_path: Path, name: str) -> None:
    job_id = finished_job(store_db, [emb([0.5, 1.0]), None])
    out = tmp_path / name
    summary = export_job(store_db, job_id, out)
    assert summary.written == 2
    with open_text(out) as f:
        rows = [json.loads(line) for line in f]
    assert [r["custom_id"] for r in rows] == ["c0", "c1"]
    assert rows[0]["response"]["body"]["data"][0]["embedding"] == [0.5, 1.0]
    assert rows[1]["error"] == {"code": "bad", "message": "no"}
    if name.endswith((".gz", ".zst")):
        assert not out.read_bytes().startswith(b"{")


def test_csv_export_to_zst(store_db: Store, tmp_path: Path) -> None:
    job_id = finished_job(store_db, [emb([0.5, 1.0, 2.0])])
    out = tmp_path / "out.csv.zst"
    export_job(store_db, job_id, out, fmt=ExportFormat.CSV)
    with open_text(out) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["custom_id"] == "c0"
    assert rows[0]["embedding_dim"] == "3"


def test_an_export_that_fails_leaves_no_partial_file(store_db: Store, tmp_path: Path) -> None:
    """The errors file cannot be placed (a folder has its name): the results file is not left either."""
    job_id = finished_job(store_db, [emb([0.5]), None])
    (tmp_path / "errors.jsonl").mkdir()
    with pytest.raises(OSError):
        export_job(store_db, job_id, tmp_path / "out.jsonl", errors=tmp_path / "errors.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("e.db")) == ["errors.jsonl"]


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_an_export_does_not_wait_for_a_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: ExportFormat
) -> None:
    """A job's workers may be writing while its lines are exported (SQLite): the export reads a
    snapshot (``Store.reading``), so it does not queue behind their writes (and takes no write
    lock of its own that they would queue behind)."""
    monkeypatch.setattr("jobs.db.SQLITE_BUSY_TIMEOUT_S", 0.2)  # a lock wait fails fast
    with Store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        job_id = finished_job(store, [emb([0.5, 1.0]), None])
        writer = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE job SET name = 'renamed'")
            summary = export_job(store, job_id, tmp_path / f"out.{fmt.value}", fmt=fmt)
            writer.execute("COMMIT")
        finally:
            writer.close()
    assert summary.written == 2
