"""WebM's duration, which mutagen does not read: the ``Segment → Info → Duration`` element.

A WebM file is EBML: elements of a variable-length ID, a variable-length size and a payload.
The duration sits near the start, in the Segment's Info element, as a float counted in
``TimecodeScale`` nanoseconds (default 1,000,000: milliseconds). Only the first ``HEAD_BYTES``
are read. Files recorded live (a browser's MediaRecorder) often carry no Duration: then there is
none to give, and None says so.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

HEAD_BYTES = 1024 * 1024
EBML, SEGMENT, INFO = 0x1A45DFA3, 0x18538067, 0x1549A966
TIMECODE_SCALE, DURATION = 0x2AD7B1, 0x4489
_UNKNOWN_SIZE = -1


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, position after it)."""
    first = data[pos]
    length = next((n for n in range(8) if first & (0x80 >> n)), 8) + 1
    if length > 8 or pos + length > len(data):
        raise ValueError("not EBML")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = _UNKNOWN_SIZE  # a live stream's "size unknown"
    return value, pos + length


def _elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(element id, payload start, payload end) of each element in ``data[start:end]``."""
    pos = start
    while pos < end:
        element, pos = _vint(data, pos, keep_marker=True)
        size, pos = _vint(data, pos, keep_marker=False)
        stop = end if size == _UNKNOWN_SIZE else min(end, pos + size)
        yield element, pos, stop
        pos = stop


def webm_seconds(source: BinaryIO) -> float | None:
    """The duration a WebM file declares, in seconds, or None (not WebM, or no Duration)."""
    data = source.read(HEAD_BYTES)
    try:
        return _duration(data)
    except (ValueError, IndexError, struct.error):
        return None


def _duration(data: bytes) -> float | None:
    top = {element: (start, stop) for element, start, stop in _elements(data, 0, len(data))}
    if EBML not in top or SEGMENT not in top:
        return None
    for element, start, stop in _elements(data, *top[SEGMENT]):
        if element == INFO:
            fields = {e: data[s:t] for e, s, t in _elements(data, start, stop)}
            if DURATION not in fields:
                return None
            raw = fields[DURATION]
            duration = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0]
            scale = int.from_bytes(fields.get(TIMECODE_SCALE, b"\x0f\x42\x40"), "big")
            return duration * scale / 1e9 if duration > 0 else None
    return None
