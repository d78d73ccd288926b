"""Output files that appear whole or not at all, compressed as their name says.

An export is written under a hidden temporary name in the target's own folder (so the final
rename never crosses a file system) and renamed over the target only once every row is written;
if anything fails on the way, the temporary file is removed and the target is left as it was.

A text output whose name ends in ``.gz`` is gzip-compressed and one ending in ``.zst`` is
Zstandard-compressed; any other name is written as plain UTF-8.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO, TextIO, cast

import zstandard

# Level 3 is zstd's own default: near gzip -6's ratio at several times its speed.
ZSTD_LEVEL = 3
# gzip's level 1: on 1536-dimension float text it compresses 116 MB a CPU second to 48.2 % of the
# size, where the command line's level 6 does 18 MB to 45.0 % (a 1M-line float export would take
# half an hour of compressing). Who wants the smaller file takes .zst: 155 MB a second, 45.3 %.
GZIP_LEVEL = 1
# Rows are handed over one by one (30 KB for a 1536-dimension line of floats): a 1 MiB buffer
# makes one write call of many rows; 20,000 such rows to tmpfs cost 21 µs a row of CPU instead of 61.
WRITE_BUFFER = 1 << 20


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other writer picks."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write; renamed to ``path`` on success, removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _compressed(raw: BinaryIO, path: Path) -> IO[bytes]:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        gz = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL)
        return cast(IO[bytes], gz)
    if suffix == ".zst":
        writer: IO[bytes] = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False)
        return writer
    return raw


@contextmanager
def text_output(path: Path) -> Iterator[TextIO]:
    """A text stream to ``path``, compressed by its suffix, that appears whole or not at all."""
    with atomic_path(path) as tmp, tmp.open("wb", buffering=WRITE_BUFFER) as raw:
        binary = _compressed(raw, path)
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=False)
        try:
            yield text
            text.flush()
        finally:
            text.detach()
            if binary is not raw:
                binary.close()


def open_text(path: Path) -> TextIO:
    """Read a text file written by ``text_output``, decompressing by its suffix (tests, scripts)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if suffix == ".zst":
        reader = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return path.open(encoding="utf-8")
