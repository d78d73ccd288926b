"""Fields of a body that name a file to upload, and the multipart request that carries them.

A family that uploads files (transcription, image edits) declares ``file_fields``: the field
names (a dotted name for a field of an object: ``options.init_image``) and a ``FileRule`` each
(the extensions the API accepts, the size cap, whether it is audio). Ingest replaces the path in
each such field with a ``jobs.blobs.StoredFile`` reference; at call time the worker reads the
blobs and ``multipart`` builds the form: every other field as a form field (a list as repeated
``name[]`` fields, as OpenAI's SDK sends ``timestamp_granularities[]``; an object as JSON text),
each file as a file part with its name and content type. The encoding is httpx's own
(``httpx.Request(data=, files=)``). Task families' files are sent inline instead, as ``data:``
URLs (``workers.taskfollow``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from jobs.blobs import StoredFile, stored_files

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileRule:
    """What a file field takes: these extensions, at most ``max_bytes``; audio has a duration."""

    extensions: tuple[str, ...]
    max_bytes: int
    audio: bool = False
    many: bool = False  # a list of files is allowed (gpt-image-1's edits take several images)
    urls: bool = False  # an http(s) URL is sent as it is (Runway's promptImage), not read as a path


WHISPER_EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm")
AUDIO_FILE = FileRule(WHISPER_EXTENSIONS, 25 * MB, audio=True)
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
IMAGE_FILE = FileRule(IMAGE_EXTENSIONS, 50 * MB, many=True)  # gpt-image-1: < 50 MB each
MASK_FILE = FileRule(("png",), 50 * MB)
VARIATION_FILE = FileRule(("png",), 4 * MB)  # dall-e-2: a square PNG under 4 MB

CONTENT_TYPES = {
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "mpga": "audio/mpeg",
    "mpeg": "audio/mpeg",
    "mp4": "audio/mp4",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
"""A file part's Content-Type, by the file's extension."""


def extension(name: str) -> str:
    """A file name's extension, lower case, without the dot ("" when it has none)."""
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


def file_seconds(body: Mapping[str, Any], fields: Mapping[str, FileRule]) -> float | None:
    """The total duration of the audio files a stored body sends; None when one is unknown."""
    total = 0.0
    for name, rule in fields.items():
        if not rule.audio:
            continue
        for stored in stored_files(body.get(name)):
            if stored.seconds is None:
                return None
            total += stored.seconds
    return total


def upload_bytes(body: Mapping[str, Any], fields: Mapping[str, FileRule]) -> int:
    """The bytes of every file a stored body sends (what a call holds in memory, about)."""
    return sum(f.size for name in fields for f in stored_files(body.get(name)))


Contents = Mapping[str, bytes]  # a blob's bytes by its sha256


def multipart(
    body: Mapping[str, Any], fields: Mapping[str, FileRule], contents: Contents
) -> tuple[bytes, str]:
    """The multipart form of a stored body (see the module docstring): its bytes and content type."""
    data: dict[str, Any] = {}
    files: list[tuple[str, tuple[str, bytes, str]]] = []
    for key, value in body.items():
        if key in fields:
            rule = fields[key]
            name = f"{key}[]" if rule.many and isinstance(value, list) else key
            files += [(name, _part(f, contents)) for f in stored_files(value)]
        elif isinstance(value, list):
            data[key if key.endswith("[]") else f"{key}[]"] = [_text(v) for v in value]
        elif value is not None:
            data[key] = _text(value)
    request = httpx.Request("POST", "http://upload.invalid/", data=data, files=files)
    return request.read(), request.headers["Content-Type"]


def _part(stored: StoredFile, contents: Contents) -> tuple[str, bytes, str]:
    kind = CONTENT_TYPES.get(extension(stored.name), "application/octet-stream")
    return stored.name, contents[stored.sha256], kind


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
