"""Embedding vectors as compact float32 binary: the record the store keeps, and its codec.

The store never keeps a vector as JSON text (1536 floats are ~44 KB of text, 6 KB as float32):
an embedding answer's vectors are taken out of its body (``take_vectors``) and stored apart, in
the ``vector_block`` table, as little-endian float32 bytes, one row per call (a line points to its
vectors in it); the body keeps the rest of the answer, each ``data`` item without its
``embedding``. ``restore_vectors`` puts them back.

- A float answer's numbers become float32 once: the API computes float32 vectors, so nothing is
  lost. The export writes each float32 value in full, as the double it is exactly
  (``-0.006929283495992422``), which is how OpenAI's API writes them: the numbers read back equal
  to those the API sent. (The shortest float32 decimal, ``-0.0069292835``, would be 40 % shorter
  but reads back as a different double, and orjson formats it at half the speed.)
- OpenAI's base64 encoding *is* little-endian float32, so a base64 answer goes straight from
  base64 to bytes with no float in between, and is exported as base64 again, byte for byte as
  the API returned it.

Memory stays flat in the vector size: a vector is bytes until numpy reads it in place.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

FLOAT32 = np.dtype("<f4")
Matrix = npt.NDArray[np.float32]


class VectorEncoding(StrEnum):
    """How the API sent the vectors, and so how the export writes them back."""

    FLOAT = "float"
    BASE64 = "base64"


@dataclass(slots=True)
class Vectors:
    """A line's embeddings: vectors ``start`` to ``stop`` of a block of ``dim``-float32 vectors.

    Not frozen (a packed call makes one per line, and a frozen dataclass sets each field through
    ``object.__setattr__``); nothing changes one once made.

    A block is one call's answer (``data``, little-endian float32), shared without a copy by the
    lines of a packed call and stored once for them all (``vector_block``): a row of its own per
    line would cost a page and a half of SQLite per 1536-dimension vector instead of one.
    """

    data: bytes
    dim: int
    encoding: VectorEncoding = VectorEncoding.FLOAT
    start: int = 0
    stop: int | None = None  # None: to the end of the block

    @property
    def block_count(self) -> int:
        """How many vectors the whole block holds."""
        return len(self.data) // (4 * self.dim) if self.dim else 0

    @property
    def count(self) -> int:
        """How many vectors are this line's (one per input)."""
        return (self.block_count if self.stop is None else self.stop) - self.start

    def matrix(self) -> Matrix:
        """The line's vectors as a read-only (count, dim) float32 array over the block, no copy."""
        n = self.count
        flat = np.frombuffer(self.data, dtype=FLOAT32, count=n * self.dim, offset=4 * self.start * self.dim)
        return flat.reshape(n, self.dim)

    def part(self, start: int, stop: int) -> Vectors:
        """This line's vectors ``start`` to ``stop`` (a packed answer split per line), same block."""
        return Vectors(self.data, self.dim, self.encoding, self.start + start, self.start + stop)

    def raw(self) -> bytes:
        """The line's own vectors as bytes."""
        size = 4 * self.dim
        return self.data[self.start * size : (self.start + self.count) * size]

    def json_values(self) -> list[Any]:
        """One value per vector as the export writes it: float32 values as doubles, or base64 text."""
        if self.encoding == VectorEncoding.BASE64:
            size = 4 * self.dim
            raw = memoryview(self.data)
            spans = range(self.start, self.start + self.count)
            return [base64.b64encode(raw[i * size : (i + 1) * size]).decode() for i in spans]
        return list(self.matrix().astype(np.float64))


def _data_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's ``data`` items sorted by ``index``, written back so; [] when none has a vector."""
    data = body.get("data")
    if not isinstance(data, list):
        return []
    items = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    having = sum(1 for d in items if "embedding" in d)
    if having and having != len(items):
        raise ValueError(f"{len(items) - having} of the answer's {len(items)} data items have no embedding")
    body["data"] = items
    return items if having else []


def _from_base64(values: Sequence[str]) -> tuple[bytes, int]:
    try:
        raws = [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"an embedding is not valid base64 ({exc})") from None
    return b"".join(raws), _same_size([len(r) // 4 for r in raws], [len(r) % 4 for r in raws])


def _from_floats(values: Sequence[Any]) -> tuple[bytes, int]:
    sizes = [len(v) if isinstance(v, list) else -1 for v in values]
    dim = _same_size(sizes, [0])
    try:
        return np.asarray(values, dtype=FLOAT32).tobytes(), dim
    except (TypeError, ValueError) as exc:
        raise ValueError(f"an embedding is not a list of numbers ({exc})") from None


def _same_size(sizes: Sequence[int], remainders: Sequence[int]) -> int:
    if len(set(sizes)) != 1 or sizes[0] <= 0 or any(remainders):
        raise ValueError(f"the answer's embeddings differ in size or are empty (sizes {sorted(set(sizes))})")
    return sizes[0]


def take_vectors(body: dict[str, Any]) -> Vectors | None:
    """Take the embeddings out of an answer body (sorted by ``index``); None when it has none.

    Raises ``ValueError`` for embeddings that are neither all float lists nor all base64 text, or
    that differ in size: such an answer cannot be stored as one float32 block.
    """
    items = _data_items(body)
    if not items:
        return None
    values = [item.pop("embedding") for item in items]
    if all(isinstance(v, str) for v in values):
        data, dim = _from_base64(values)
        return Vectors(data, dim, VectorEncoding.BASE64)
    data, dim = _from_floats(values)
    return Vectors(data, dim, VectorEncoding.FLOAT)


def restore_vectors(body: Mapping[str, Any], vectors: Vectors) -> dict[str, Any]:
    """The answer body with each ``data`` item's embedding back (numpy arrays or base64 text)."""
    values = vectors.json_values()
    data = [dict(item) for item in body.get("data") or []]
    for item, value in zip(data, values, strict=False):
        item["embedding"] = value
    return dict(body) | {"data": data}


def dumps_with_vectors(body_json: str | bytes, vectors: Vectors) -> bytes:
    """The stored body JSON with its vectors restored, as compact JSON."""
    body = restore_vectors(orjson.loads(body_json), vectors)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
