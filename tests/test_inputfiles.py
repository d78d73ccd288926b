"""Input files named by lines: resolved beside the input file, checked, described once."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay.media import sample_wav
from batcher.inputfiles import FileResolver, audio_seconds
from jobs.blobs import StoredFile
from workers.endpoints import BodyError, family_of
from workers.endpoints.transcriptions import TRANSCRIPTIONS

FAMILY = family_of(TRANSCRIPTIONS)


def resolve(folder: Path, body: dict[str, Any]) -> tuple[dict[str, Any], list[StoredFile]]:
    files = FileResolver(folder).resolve(FAMILY, body)
    return body, [f.stored for f in files]


def test_a_path_beside_the_input_becomes_a_reference_with_its_duration(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(sample_wav(2.5))
    body, [stored] = resolve(tmp_path, {"model": "whisper-1", "file": "audio/a.wav"})
    assert body["file"] == stored.as_json()
    assert stored.name == "a.wav"
    assert stored.size == len(sample_wav(2.5))
    assert stored.seconds == 2.5


def test_a_data_url_is_decoded_and_named_by_its_type(tmp_path: Path) -> None:
    url = "data:audio/wav;base64," + base64.b64encode(sample_wav(1)).decode()
    body, [stored] = resolve(tmp_path, {"file": url})
    assert body["file"]["blob"] == stored.sha256
    assert stored.name == "file.wav"
    assert stored.seconds == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.mp3", r'"file": missing.mp3 does not exist \(looked in'),
        ("notes.txt", r'"file": notes.txt is not a file this endpoint takes; use one of: flac, mp3'),
        (12, r'"file" must be a file path relative to the input file, or a data: URL'),
        ("data:audio/wav,plain", r"data:TYPE;base64"),
        ("data:text/plain;base64,aGk=", r"a data: URL of type text/plain"),
        ("data:audio/wav;base64,@@@", r"not valid base64"),
        ("folder.wav", r"is not a file"),
        ("empty.wav", r"is empty"),
    ],
)
def test_bad_files_name_the_field_and_what_to_do(tmp_path: Path, value: Any, message: str) -> None:
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BodyError, match=message):
        resolve(tmp_path, {"file": value})


def test_a_file_over_25_mb_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.mp3"
    with big.open("wb") as f:
        f.truncate(25 * 1024 * 1024 + 1)
    with pytest.raises(BodyError, match=r"25.0 MB, over the 25 MB the API takes"):
        resolve(tmp_path, {"file": "big.mp3"})


def test_the_same_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.wav").write_bytes(sample_wav(1))
    resolver, reads = FileResolver(tmp_path), []
    real = FileResolver._describe
    monkeypatch.setattr(FileResolver, "_describe", staticmethod(lambda *a: reads.append(a) or real(*a)))
    for _ in range(3):
        resolver.resolve(FAMILY, {"file": "a.wav"})
    assert len(reads) == 1


def test_audio_without_readable_headers_has_no_duration(tmp_path: Path) -> None:
    (tmp_path / "x.webm").write_bytes(b"\x1a\x45\xdf\xa3 not really webm")
    assert audio_seconds(tmp_path / "x.webm") is None
    _, [stored] = resolve(tmp_path, {"file": "x.webm"})
    assert stored.seconds is None
