"""WebM's declared duration, read from its EBML header (mutagen reads every other whisper format)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from batcher.inputfiles import audio_seconds
from batcher.webm import DURATION, EBML, INFO, SEGMENT, TIMECODE_SCALE, webm_seconds


def element(element_id: int, payload: bytes, *, unknown_size: bool = False) -> bytes:
    head = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    size = (
        b"\x01\xff\xff\xff\xff\xff\xff\xff"
        if unknown_size
        else (0x10000000 | len(payload)).to_bytes(4, "big")
    )
    return head + size + payload


def webm(duration: bytes | None, *, scale: int | None = None, unknown_size: bool = False) -> bytes:
    info = b"" if scale is None else element(TIMECODE_SCALE, scale.to_bytes(3, "big"))
    info += b"" if duration is None else element(DURATION, duration)
    segment = element(INFO, info) + element(0x1F43B675, b"\x00" * 16)  # a Cluster after it
    return element(EBML, element(0x4282, b"webm")) + element(SEGMENT, segment, unknown_size=unknown_size)


def test_the_duration_in_timecode_scale_units() -> None:
    assert webm_seconds(io.BytesIO(webm(struct.pack(">d", 2500.0)))) == 2.5  # default scale: ms
    assert webm_seconds(io.BytesIO(webm(struct.pack(">f", 3.0), scale=1_000_000_000 // 1000))) == 0.003


def test_a_live_recording_without_duration_or_a_non_webm_file_has_none() -> None:
    assert webm_seconds(io.BytesIO(webm(None, unknown_size=True))) is None
    assert webm_seconds(io.BytesIO(b"OggS not webm")) is None
    assert webm_seconds(io.BytesIO(b"\x1a\x45\xdf\xa3\xff")) is None  # cut short


def test_audio_seconds_falls_back_to_it(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(webm(struct.pack(">d", 61_200.0), unknown_size=True))
    assert audio_seconds(path) == 61.2
    assert audio_seconds(io.BytesIO(path.read_bytes())) == 61.2
