"""Units of work: what one upstream call carries. A unit is one line, or a pack of embedding lines.

``units_from`` turns a stream of claimed lines into units. Embedding lines with the same pack key
(``workers.packing``) are gathered until a pack is full (inputs or estimated tokens) or no new
line has arrived for ``linger`` seconds; every other line is a unit of its own at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from jobs.endpoints import Endpoint
from jobs.records import WorkItem
from workers.endpoints import family_of
from workers.packing import PackLimits, inputs_of, merge_bodies, pack_key


@dataclass
class Unit:
    """Lines that travel in one call, with their parsed bodies and attempts so far."""

    items: list[WorkItem]
    requests: list[dict[str, Any]]
    attempts: list[int] = field(default_factory=list)
    throttled_since: float | None = None  # monotonic time of the first throttled answer
    throttles: int = 0  # throttled answers in a row
    # A pack's merged body and spans, made once: its request and its answer's split both need them.
    _merged: tuple[dict[str, Any], list[tuple[int, int]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.attempts:
            self.attempts = [item.attempts for item in self.items]

    @classmethod
    def single(cls, item: WorkItem) -> Unit:
        """A unit of one line."""
        return cls([item], [body_of(item)])

    @property
    def ids(self) -> list[int]:
        """The line ids of the unit's items."""
        return [item.request_id for item in self.items]

    @property
    def packed(self) -> bool:
        """True when several lines share the call."""
        return len(self.items) > 1

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint every line of the unit calls."""
        return self.items[0].endpoint

    @property
    def model(self) -> str:
        """The model every line of the unit names."""
        return self.items[0].model

    @property
    def est_tokens(self) -> int:
        """Tokens to reserve for the call."""
        return sum(item.est_tokens for item in self.items)

    def content(self) -> bytes:
        """The request body to send."""
        if not self.packed:
            return self.items[0].body.encode()
        return orjson.dumps(self._merge()[0])

    def spans(self) -> list[tuple[int, int]]:
        """Each line's span in the packed ``input`` list."""
        return self._merge()[1]

    def _merge(self) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        if self._merged is None:  # a unit's lines never change: ``keep`` makes a new unit
            self._merged = merge_bodies(self.requests)
        return self._merged

    def throttled(self, now: float) -> int:
        """Count a throttled answer (429, overload); return how many came in a row."""
        if self.throttled_since is None:
            self.throttled_since = now
        self.throttles += 1
        return self.throttles

    def waited(self, now: float) -> float:
        """Seconds since the unit's first throttled answer (0 if none)."""
        return now - self.throttled_since if self.throttled_since is not None else 0.0

    def keep(self, indexes: list[int]) -> Unit:
        """The unit made of these lines only."""
        return Unit(
            [self.items[i] for i in indexes],
            [self.requests[i] for i in indexes],
            [self.attempts[i] for i in indexes],
        )

    def halves(self) -> tuple[Unit, Unit]:
        """Split a pack in two (to isolate an input the API refuses)."""
        middle = len(self.items) // 2
        return self.keep(list(range(middle))), self.keep(list(range(middle, len(self.items))))


_Queue = asyncio.Queue[WorkItem | Exception | None]


@dataclass
class _Pack:
    unit: Unit
    inputs: int = 0
    tokens: int = 0


def _fits(pack: _Pack, inputs: int, tokens: int, limits: PackLimits) -> bool:
    return pack.inputs + inputs <= limits.max_inputs and pack.tokens + tokens <= limits.max_tokens


async def units_from(
    items: AsyncIterable[WorkItem] | Iterable[WorkItem], *, pack: PackLimits | None, linger: float = 0.02
) -> AsyncIterator[Unit]:
    """Yield units: embedding lines packed per key when ``pack`` is set, others one by one."""
    queue: _Queue = asyncio.Queue(maxsize=(pack.max_inputs if pack else 1) * 2)
    producer = asyncio.create_task(_produce(items, queue))
    open_packs: dict[bytes, _Pack] = {}
    try:
        while True:
            try:
                # The common case of a busy stream inline: no coroutine, no timer, no task a line.
                item = (
                    queue.get_nowait()
                    if not queue.empty()
                    else await _wait(queue, linger if open_packs else None)
                )
            except TimeoutError:
                for key in list(open_packs):
                    yield open_packs.pop(key).unit
                continue
            if item is None:
                break
            if isinstance(item, Exception):
                raise item
            if pack is None or not family_of(item.endpoint).packable:
                yield Unit.single(item)
                continue
            for full in _add(open_packs, item, pack):
                yield full
        for leftover in open_packs.values():
            yield leftover.unit
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


async def _wait(queue: _Queue, linger: float | None) -> WorkItem | Exception | None:
    """The next line, when none is waiting: a wait of at most ``linger`` (TimeoutError)."""
    if linger is None:
        return await queue.get()
    return await asyncio.wait_for(queue.get(), linger)


def body_of(item: WorkItem) -> dict[str, Any]:
    """The line's parsed body: the one its claim parsed for the cache key, or parsed now."""
    return item.request if item.request is not None else orjson.loads(item.body)


def _add(open_packs: dict[bytes, _Pack], item: WorkItem, limits: PackLimits) -> list[Unit]:
    """Put a line into its pack; return the packs that are complete."""
    body = body_of(item)
    key, inputs = pack_key(body), len(inputs_of(body))
    done = []
    current = open_packs.get(key)
    if current is not None and not _fits(current, inputs, item.est_tokens, limits):
        done.append(open_packs.pop(key).unit)
        current = None
    if current is None:
        current = open_packs[key] = _Pack(Unit([], []))
    current.unit.items.append(item)
    current.unit.requests.append(body)
    current.unit.attempts.append(item.attempts)
    current.inputs += inputs
    current.tokens += item.est_tokens
    if current.inputs >= limits.max_inputs:
        done.append(open_packs.pop(key).unit)
    return done


async def _produce(items: AsyncIterable[WorkItem] | Iterable[WorkItem], queue: _Queue) -> None:
    """Move lines from the source into the queue; end with None, or with the source's error."""
    try:
        if isinstance(items, AsyncIterable):
            async for item in items:
                if queue.full():
                    await queue.put(item)
                else:  # no coroutine made a line while the queue has room
                    queue.put_nowait(item)
        else:
            for item in items:
                if queue.full():
                    await queue.put(item)
                else:
                    queue.put_nowait(item)
    except Exception as exc:  # handed to the consumer, which raises it
        await queue.put(exc)
        return
    await queue.put(None)
