"""The result files of the stand-in relay's tasks: deterministic bytes by name, and their URLs.

A file's name says everything about it: ``mj-<task id>.png``, ``suno-<clip id>.mp3`` / ``.mp4`` /
``.png``, ``video-<task id>.mp4``. Its bytes are a function of the name alone (``file_bytes``), so
a test can check a downloaded file against ``expected_file(name)`` without asking the relay, and
the files stay servable after ``/_reset``. A name prefixed ``missing-`` answers 404, ``slow-``
hangs (the ``unfetchable`` and ``result_timeout`` faults).

The files are served at ``/_tasks/files/NAME`` on the relay's other origin (``localhost`` rather
than ``127.0.0.1``, as a CDN would be), without a key.
"""

from __future__ import annotations

import hashlib
import struct

from batcher.devrelay.media import sample_png

FILES_PATH = "/_tasks/files"
CONTENT_TYPES = {".png": "image/png", ".mp3": "audio/mpeg", ".mp4": "video/mp4"}
MP3_FRAMES = 8
_MP3_HEADER = b"\xff\xfb\x90\x64"  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding
_MP3_FRAME = 417  # bytes of one such frame, header included


def _stream(seed: str, size: int) -> bytes:
    """``size`` bytes drawn from the sha256 chain of ``seed``."""
    out, block = bytearray(), seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def sample_mp3(seed: str) -> bytes:
    """A few MPEG audio frames whose payload comes from ``seed``."""
    payload = _stream(seed, MP3_FRAMES * (_MP3_FRAME - 4))
    size = _MP3_FRAME - 4
    return b"".join(_MP3_HEADER + payload[i * size : (i + 1) * size] for i in range(MP3_FRAMES))


def sample_mp4(seed: str) -> bytes:
    """An ISO media file's ``ftyp`` box and an ``mdat`` box whose content comes from ``seed``."""
    ftyp = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    data = _stream(seed, 1024)
    return _box(b"ftyp", ftyp) + _box(b"mdat", data)


def _box(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", 8 + len(data)) + kind + data


def file_bytes(name: str) -> bytes | None:
    """The bytes the relay serves for ``name`` (None: 404); the prefix does not change them."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or name.startswith("missing-"):
        return None
    seed = stem.removeprefix("slow-")
    if ext == "png":
        return sample_png(seed, side=8)
    if ext == "mp3":
        return sample_mp3(seed)
    return sample_mp4(seed) if ext == "mp4" else None


def expected_file(name: str) -> bytes:
    """What a download of the file named ``name`` (as in its URL) must hold."""
    data = file_bytes(name.removeprefix("missing-"))
    assert data is not None, f"{name} is no task file"
    return data


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name[name.rfind(".") :], "application/octet-stream")


def file_url(origin: str, prefix: str, name: str) -> str:
    """The URL of a result file on the relay's file origin; ``prefix`` is the task's fault prefix."""
    return f"{origin}{FILES_PATH}/{prefix}{name}"
