"""A byte budget for answers in flight, so memory stays flat whatever the vector size.

A pack of 256 inputs comes back as ~8 MB of JSON when the vectors have 1536 float dimensions;
32 such calls in flight hold 250 MB of answer text before one of them is parsed. Each call
reserves its answer's estimated size (``answer_bytes``) from an ``AnswerBudget`` and waits while
the budget is taken; a call larger than the whole budget runs alone. A call that uploads files
(audio, images) reserves twice their size: the bytes read from the store and the form made of
them. Answers that are small (chat, short vectors) reserve nothing and never wait. Throughput
does not suffer: parsing 8 MB of floats takes longer than a call, so eight big calls in flight
keep the parser busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from workers.endpoints import family_of
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.filefields import upload_bytes
from workers.packing import inputs_of
from workers.units import Unit

ANSWER_BUDGET = 64 * 1024 * 1024
SMALL_ANSWER = 256 * 1024  # below this a call reserves nothing: chat, 8-dimension packs
FLOAT_TEXT_BYTES = 20  # one float32 as JSON text: "-0.006929283495992422,"
BASE64_BYTES = 6  # one float32 as base64 text: 4 bytes, 5.3 characters


def expected_dimensions(model: str, dimensions: object) -> int:
    """The vector size an embedding request will get: its ``dimensions``, else the model's usual."""
    if isinstance(dimensions, int) and dimensions > 0:
        return dimensions
    return 3072 if "large" in model else 1536


def answer_bytes(unit: Unit) -> int:
    """About how many bytes the unit's answer will be; 0 when it is small."""
    fields = family_of(unit.endpoint).file_fields
    if fields:  # the files read from the store, and the multipart body made of them
        size = 2 * sum(upload_bytes(r, fields) for r in unit.requests)
        return size if size >= SMALL_ANSWER else 0
    if unit.endpoint != EMBEDDINGS:
        return 0
    body = unit.requests[0]
    dim = expected_dimensions(unit.model, body.get("dimensions"))
    per_value = BASE64_BYTES if body.get("encoding_format") == "base64" else FLOAT_TEXT_BYTES
    size = sum(len(inputs_of(r)) for r in unit.requests) * dim * per_value
    return size if size >= SMALL_ANSWER else 0


class AnswerBudget:
    """Lets calls start while their answers fit the budget together (see the module docstring)."""

    def __init__(self, budget: int = ANSWER_BUDGET) -> None:
        self.budget, self.used = budget, 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Reserve ``size`` bytes for the block's duration."""
        if size <= 0:
            yield
            return
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.budget)
            self.used += size
        try:
            yield
        finally:
            async with self._changed:
                self.used -= size
                self._changed.notify_all()
