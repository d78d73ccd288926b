"""The JSON text of stored vectors for the JSONL export, made a block at a time.

The values written are those of ``jobs.vectors``: a float answer's float32 values as the doubles
they exactly are (orjson's shortest text that reads back as that double: equal to what the API
sent), a base64 answer's bytes as base64 again, byte for byte as returned. Only how fast the
text is made differs:

- A body is written around its vectors from a template (``BodyTemplates``): the stored body is
  parsed and written once with a marker where each vector goes, split there, and the pieces kept
  for the next line with the same body (the lines of a packed call mostly share theirs). A line's
  body is then its template's pieces and its vectors' text joined, with no JSON parsed or written.
- Base64 is made by pybase64 (SIMD; three times ``binascii``'s speed on a 1536-float vector),
  from a view of the block: the line's bytes are never copied out first. The text is the same
  standard base64 with padding either way.
- A packed call's vectors share one block (256 lines of one call, say). Widening float32 to
  float64 and calling orjson cost a fixed price per call that is most of the work for one short
  vector, so the first line of a block has the whole block's text made (for vectors of up to
  ``SPLIT_DIMENSIONS`` floats by one orjson call, cut between rows) and the lines after it take
  their rows. A line that is not its block's first (a block met again after another one) has only
  its own rows made, so no block is made whole more than once.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import orjson

from jobs.store import Block
from jobs.vectors import FLOAT32, VectorEncoding, Vectors

Encode = Callable[[memoryview], bytes]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Where a vector goes in a body written once as a template: a NUL byte, which orjson never writes
# raw (it escapes U+0000 inside strings, and there is nowhere else it could appear).
_MARK = b"\x00"
# Up to this dimension a block's float vectors are written by one call and cut apart; above it a
# call a vector is faster (one call for 256 vectors of 1536 floats took twice as long).
SPLIT_DIMENSIONS = 64
# Templates kept (a body and a vector count each); past it they are dropped and made again.
TEMPLATES = 4096


def _base64_encoder() -> Encode:
    """pybase64's encoder; the standard library's in an environment installed before batcher
    depended on pybase64 (the same text, three times slower) until ``pip install -e .``."""
    try:
        module = importlib.import_module("pybase64")
    except ImportError:
        return base64.b64encode
    return cast(Encode, module.b64encode)


b64encode = _base64_encoder()


class VectorJson:
    """Each vector of a line as JSON text (an array of numbers or a base64 string)."""

    def __init__(self) -> None:
        self._block: Block | None = None
        self._texts: list[bytes] = []

    def texts(self, block: Block, start: int, stop: int) -> list[bytes]:
        """Vectors ``start`` to ``stop`` of a block (a line's) as JSON, one text per vector. The
        block is known by its identity: a page's lines share its tuple (``ResultPage.blocks``)."""
        data, dim, encoding = block
        if block is not self._block:
            if start != 0 or stop * 4 * dim == len(data):  # not a block's first line, or its only one
                return block_texts(data, dim, encoding, start, stop)
            self._block, self._texts = block, block_texts(data, dim, encoding)
        return self._texts[start:stop]


def block_texts(
    data: bytes, dim: int, encoding: VectorEncoding, start: int = 0, stop: int | None = None
) -> list[bytes]:
    """Vectors ``start`` to ``stop`` of a block as JSON texts."""
    size = 4 * dim
    view = memoryview(data)[start * size : None if stop is None else stop * size]
    if encoding == VectorEncoding.BASE64:
        return base64_texts(view, dim)
    doubles = np.frombuffer(view, dtype=FLOAT32).reshape(-1, dim).astype(np.float64)
    if dim > SPLIT_DIMENSIONS:
        return [orjson.dumps(row, option=_NUMPY) for row in doubles]
    # One call for the block, cut between its rows (no number holds a bracket).
    return orjson.dumps(doubles, option=_NUMPY)[1:-1].replace(b"],[", b"]\x00[").split(b"\x00")


def base64_texts(data: bytes | memoryview, dim: int) -> list[bytes]:
    """Each vector of float32 bytes as a JSON string of its base64, as OpenAI writes them."""
    size, view = 4 * dim, memoryview(data)
    return [b'"%b"' % b64encode(view[i : i + size]) for i in range(0, len(view), size)]


class BodyTemplates:
    """Stored bodies (``data`` items without ``embedding``) as the pieces between their vectors."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str | bytes, int], list[bytes]] = {}

    def pieces(self, body_json: str | bytes, count: int) -> list[bytes]:
        """The body's JSON split where its first ``count`` items' embeddings go (one piece more
        than the vectors it takes: fewer when it has fewer items)."""
        key = (body_json, count)
        found = self._kept.get(key)
        if found is None:
            if len(self._kept) >= TEMPLATES:
                self._kept.clear()
            found = self._kept[key] = _template(body_json, count)
        return found


def _template(body_json: str | bytes, count: int) -> list[bytes]:
    body = orjson.loads(body_json)
    data = body.get("data") or []
    for item in data[:count]:
        item["embedding"] = orjson.Fragment(_MARK)
    return orjson.dumps(body).split(_MARK)


def fill(pieces: Sequence[bytes], texts: Sequence[bytes]) -> bytes:
    """A body's template pieces with the vectors' text between them."""
    if len(pieces) == 2:
        return b"%b%b%b" % (pieces[0], texts[0], pieces[1])
    joined = [piece for pair in zip(pieces[:-1], texts, strict=False) for piece in pair]
    return b"".join((*joined, pieces[-1]))


def dumps_body(body_json: str | bytes, vectors: Vectors, texts: VectorJson) -> bytes:
    """The stored body JSON (its ``data`` items without ``embedding``) with the vectors put back."""
    block = (vectors.data, vectors.dim, vectors.encoding)
    return fill(
        _template(body_json, vectors.count), texts.texts(block, vectors.start, vectors.start + vectors.count)
    )
