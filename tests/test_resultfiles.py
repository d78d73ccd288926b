"""Result files: never written through a planted link, never shared by two stores (issue 11, 4-5)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batcher.devrelay import RelayServer
from batcher.devrelay.answers import expected_audio
from jobs.db import Store
from tests.helpers import RELAY_KEY, all_lines, batch_line, invoke, write_jsonl
from workers.resultfiles import ResultFileError, job_folder, write_result_file

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_a_symlinked_job_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = job_folder(tmp_path / "results", 1, CREATED)
    folder.parent.mkdir()
    folder.symlink_to(elsewhere)
    with pytest.raises(ResultFileError, match="symbolic link"):
        write_result_file(folder, "7.mp3", b"ID3 audio")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("planted", ["7.mp3", "7.mp3.part"])
def test_a_planted_link_is_replaced_not_followed(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = job_folder(tmp_path / "results", 1, CREATED)
    folder.mkdir(parents=True)
    (folder / planted).symlink_to(victim)
    path = write_result_file(folder, "7.mp3", b"ID3 audio")
    assert victim.read_bytes() == b"precious"
    assert not path.is_symlink() and path.read_bytes() == b"ID3 audio"
    assert sorted(p.name for p in folder.iterdir() if not p.is_symlink()) == ["7.mp3"]


def test_two_stores_sharing_a_home_keep_their_own_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay: RelayServer
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
    monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
    paths = {}
    for name in ("one", "two"):
        url = f"sqlite:///{tmp_path / name}.db"
        monkeypatch.setenv("BATCHER_DATABASE_URL", url)
        body = {"model": "tts-1", "voice": "alloy", "input": f"this is store {name}"}
        source = write_jsonl(tmp_path / f"{name}.jsonl", [batch_line("t", "/v1/audio/speech", body)])
        assert invoke("run", str(source), "-o", str(tmp_path / f"{name}.out.jsonl")).exit_code == 0
        with Store(url) as store:
            [line] = all_lines(store)
        assert line.job_id == 1 and line.audio_path is not None
        paths[name] = (Path(line.audio_path), expected_audio(body))
    assert paths["one"][0] != paths["two"][0]
    for path, audio in paths.values():
        assert path.read_bytes() == audio
        assert os.path.realpath(path).startswith(str(tmp_path / "home" / "results"))
