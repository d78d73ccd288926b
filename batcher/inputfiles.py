"""Input files a line names (``"file": "clip.mp3"``, ``"image": [...]``): found, checked, described.

A family's ``file_fields`` (``workers.endpoints.filefields``) name the fields that hold a file.
Each holds a path, relative to the input file's folder (an absolute path works too), or a
``data:`` URL (``data:audio/mpeg;base64,...``). Reading a line resolves each one to a
``LocalFile``: the file's bytes stay where they are (a path) until ingest streams them into the
blob store (``jobs.blobs``), and the body's field becomes the ``StoredFile`` reference the
workers read. A problem says which field and what to do: a missing file, an extension the API
does not take, a file over the size cap, a malformed ``data:`` URL.

Audio durations are read with mutagen (mp3, mp4/m4a, flac, ogg, wav headers; no decoding):
they are what relays bill transcription by. mutagen does not read WebM, whose declared duration
``batcher.webm`` reads; a file with no readable duration (a live-recorded WebM has none) has its
seconds estimated from its size when it is priced (see ``workers.endpoints.transcriptions``).

The same path named by many lines is read once: the last ``CACHE_SIZE`` files resolved are
remembered by (path, size, modification time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batcher.webm import webm_seconds
from jobs.blobs import CHUNK_BYTES, StoredFile
from workers.endpoints.base import BodyError, Family
from workers.endpoints.filefields import CONTENT_TYPES, FileRule, extension

CACHE_SIZE = 1024
_DATA_URL = re.compile(
    r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.A
)
_TYPE_EXTENSIONS = {kind: ext for ext, kind in reversed(list(CONTENT_TYPES.items()))} | {
    "audio/mp3": "mp3",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/x-flac": "flac",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/mpeg": "mpeg",
    "image/jpg": "jpg",
}


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file a line sends, before it is stored: where its bytes are, and its reference."""

    stored: StoredFile
    path: Path | None = None  # a file on disk, or
    data: bytes | None = None  # the bytes of a data: URL

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in ``CHUNK_BYTES`` pieces."""
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk


def _holder(body: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, str]:
    """The object holding a (dotted) field, and its key there; None when the body has no such object."""
    *path, key = name.split(".")
    holder: Any = body
    for part in path:
        holder = holder.get(part) if isinstance(holder, dict) else None
    return (holder if isinstance(holder, dict) else None), key


class FileResolver:
    """Resolves the file fields of a family's bodies, relative to one folder (see module doc)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen: OrderedDict[tuple[str, int, int], StoredFile] = OrderedDict()

    def resolve(self, family: Family, body: dict[str, Any]) -> list[LocalFile]:
        """Replace each file field's path or data: URL by its reference; the files, to store."""
        found: list[LocalFile] = []
        for name, rule in family.file_fields.items():
            holder, key = _holder(body, name)
            if holder is None or key not in holder:
                continue
            value = holder[key]
            if rule.urls and isinstance(value, str) and value.startswith(("https://", "http://")):
                continue
            if rule.many and isinstance(value, list) and value:
                files = [self._one(name, v, rule) for v in value]
                holder[key] = [f.stored.as_json() for f in files]
            else:
                files = [self._one(name, value, rule)]
                holder[key] = files[0].stored.as_json()
            found += files
        return found

    def _one(self, field: str, value: Any, rule: FileRule) -> LocalFile:
        if not isinstance(value, str) or not value.strip():
            many = " (or a list of them)" if rule.many else ""
            raise BodyError(f'"{field}" must be a file path relative to the input file, or a data: URL{many}')
        if value.startswith("data:"):
            return _from_data_url(field, value, rule)
        return self._from_path(field, value, rule)

    def _from_path(self, field: str, value: str, rule: FileRule) -> LocalFile:
        path = self.folder / value
        ext = extension(path.name)
        if ext not in rule.extensions:
            raise BodyError(f'"{field}": {value} is not a file this endpoint takes; {_allowed(rule)}')
        try:
            stat = path.stat()
        except OSError:
            raise BodyError(
                f'"{field}": {value} does not exist (looked in {self.folder}); paths are relative to '
                "the input file's folder"
            ) from None
        if not path.is_file():
            raise BodyError(f'"{field}": {value} is not a file')
        _check_size(field, value, stat.st_size, rule)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        stored = self._seen.get(key)
        if stored is None:
            stored = self._describe(path, stat.st_size, rule)
            self._seen[key] = stored
            if len(self._seen) > CACHE_SIZE:
                self._seen.popitem(last=False)
        return LocalFile(stored, path=path)

    @staticmethod
    def _describe(path: Path, size: int, rule: FileRule) -> StoredFile:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        seconds = audio_seconds(path) if rule.audio else None
        return StoredFile(digest.hexdigest(), path.name, size, seconds)


def _from_data_url(field: str, value: str, rule: FileRule) -> LocalFile:
    match = _DATA_URL.match(value)
    if match is None or not match.group("b64"):
        raise BodyError(
            f'"{field}": a data: URL must be data:TYPE;base64,... (e.g. data:audio/mpeg;base64,...)'
        )
    ext = _TYPE_EXTENSIONS.get((match.group("type") or "").lower(), "")
    if ext not in rule.extensions:
        raise BodyError(f'"{field}": a data: URL of type {match.group("type") or "none"}; {_allowed(rule)}')
    try:
        data = base64.b64decode(value[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(f'"{field}": the data: URL is not valid base64') from None
    _check_size(field, "the data: URL", len(data), rule)
    seconds = audio_seconds(io.BytesIO(data)) if rule.audio else None
    stored = StoredFile(hashlib.sha256(data).hexdigest(), f"{field}.{ext}", len(data), seconds)
    return LocalFile(stored, data=data)


def _check_size(field: str, what: str, size: int, rule: FileRule) -> None:
    if size > rule.max_bytes:
        raise BodyError(
            f'"{field}": {what} is {size / 2**20:.1f} MB, over the {rule.max_bytes // 2**20} MB the API '
            "takes; split or compress it"
        )
    if size == 0:
        raise BodyError(f'"{field}": {what} is empty')


def _allowed(rule: FileRule) -> str:
    return "use one of: " + ", ".join(rule.extensions)


def audio_seconds(source: Path | io.BytesIO) -> float | None:
    """The audio's duration in seconds from its headers (mutagen), or None when it cannot tell."""
    import mutagen

    try:
        parsed = mutagen.File(source)
    except (mutagen.MutagenError, ValueError, OSError, EOFError):
        parsed = None
    length = getattr(getattr(parsed, "info", None), "length", None)
    if parsed is None:
        length = _webm_seconds(source)
    return round(float(length), 3) if isinstance(length, int | float) and length > 0 else None


def _webm_seconds(source: Path | io.BytesIO) -> float | None:
    if isinstance(source, io.BytesIO):
        source.seek(0)
        return webm_seconds(source)
    try:
        with source.open("rb") as f:
            return webm_seconds(f)
    except OSError:
        return None
