"""The JSON text of stored vectors for the JSONL export, made a block at a time.

The values written are those of ``jobs.vectors``: a float answer's float32 values as the doubles
they exactly are (orjson's shortest text that reads back as that double: equal to what the API
sent), a base64 answer's bytes as base64 again, byte for byte as returned. Only how fast the
text is made differs:

- A body is written around its vectors as ``orjson.Fragment`` pieces: orjson copies them as they
  are, where a ``str`` of 8 KB of base64 is scanned for characters to escape and copied again.
- Base64 is made by pybase64 (SIMD; three times ``binascii``'s speed on a 1536-float vector),
  from a view of the block: the line's bytes are never copied out first. The text is the same
  standard base64 with padding either way.
- A packed call's vectors share one block (256 lines of one call, say). Widening float32 to
  float64 costs numpy a fixed price per call that is most of the work for one vector, so the first
  line of a block has the whole block widened and the lines after it take their rows. A line that
  is not its block's first (a block met again after another one) widens only its own rows, so no
  block is widened whole more than once.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from typing import cast

import numpy as np
import numpy.typing as npt
import orjson

from jobs.vectors import FLOAT32, VectorEncoding, Vectors

Doubles = npt.NDArray[np.float64]
Encode = Callable[[memoryview], bytes]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


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
    """Each vector of a line as a JSON piece (an array of numbers or a base64 string)."""

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._doubles: Doubles = np.empty((0, 0))

    def pieces(self, vectors: Vectors) -> list[orjson.Fragment]:
        """The line's vectors as JSON, one piece per vector, in order."""
        if vectors.encoding == VectorEncoding.BASE64:
            size = 4 * vectors.dim
            view = memoryview(vectors.data)[vectors.start * size : (vectors.start + vectors.count) * size]
            return base64_pieces(view, vectors.dim)
        return [orjson.Fragment(orjson.dumps(row, option=_NUMPY)) for row in self._rows(vectors)]

    def _rows(self, vectors: Vectors) -> Doubles:
        if vectors.data is not self._data and vectors.start == 0 and vectors.count < vectors.block_count:
            self._data, self._doubles = vectors.data, _doubles(vectors.data, vectors.dim)
        if vectors.data is self._data:
            return self._doubles[vectors.start : vectors.start + vectors.count]
        return _doubles(vectors.raw(), vectors.dim)


def _doubles(data: bytes, dim: int) -> Doubles:
    """A float32 block as a (vectors × dimension) matrix of the doubles its values exactly are."""
    return np.frombuffer(data, dtype=FLOAT32).reshape(-1, dim).astype(np.float64)


def base64_pieces(data: bytes | memoryview, dim: int) -> list[orjson.Fragment]:
    """Each vector of float32 bytes as a JSON string of its base64, as OpenAI writes them."""
    size, view = 4 * dim, memoryview(data)
    return [orjson.Fragment(b'"%b"' % b64encode(view[i : i + size])) for i in range(0, len(view), size)]


def dumps_body(body_json: str | bytes, vectors: Vectors, pieces: VectorJson) -> bytes:
    """The stored body JSON (its ``data`` items without ``embedding``) with the vectors put back."""
    body = orjson.loads(body_json)
    data = body.get("data") or []
    for item, piece in zip(data, pieces.pieces(vectors), strict=False):
        item["embedding"] = piece
    return orjson.dumps(body)
