"""The response cache: identical requests answered from an earlier result instead of a new call.

A request's **key** is (the first 128 bits of) the SHA-256 of its endpoint and its canonical body
(keys sorted, compact JSON): two lines that ask the same thing of the same model have the same
key, whatever the provider (the answer is the model's, not the relay's) and whatever the job.
Which lines get a key is the job's ``cache`` option (``jobs.options.CacheMode``):

- ``auto`` (the default): deterministic requests only, as each endpoint family says
  (``Family.repeatable``): every embedding and moderation; a chat, completion, responses, Claude
  or Gemini request, or a transcription, with ``temperature`` 0, or with no ``temperature``
  and a ``seed``. A sampled request asks for a fresh
  draw: answering it from an old one would change its meaning;
- ``all`` (``--cache-all``): every request a family lets be cached, whatever its sampling;
- ``off`` (``--no-cache``): no key, every line is called and nothing is kept.

Speech and images are never cached: their answers are files beside the store, not rows in it.

Two places answer from it:

- **at claim time** (``serve_from_cache``, in the claim's own transaction): a claimed line whose
  key the store holds becomes succeeded there and then with a copy of that answer, marked
  ``cached``; it never reaches the executor. Nothing in flight, so nothing a kill could lose.
- **in the executor** (``SharedCalls``): lines with the same key claimed by one executor are
  called once; the first is called and the others (its *twins*) wait, their leases kept, and take
  a copy of its result, success or failure, when it lands. A few of the last answers are kept
  in memory too, for a twin claimed before its first line's result was written.

Twins claimed by two workers at the same moment are both called: the store holds no answer yet.
The kept answer is written with the result that brought it (``jobs.store.results``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlmodel import Session

from jobs import store as q
from jobs.endpoints import Endpoint
from jobs.models import RequestState
from jobs.options import CacheMode
from jobs.records import LineResult, WorkItem
from jobs.vectors import Vectors
from workers.endpoints import family_of

KEY_CHARS = 32  # 128 bits of the SHA-256: no collision in any store, half the bytes per kept key
RECENT_ANSWERS = 256  # answers kept in memory for late twins: at most ~1.5 MB of 1536-dim vectors


def deterministic(endpoint: Endpoint, body: dict[str, Any]) -> bool:
    """Whether the request asks for the same answer every time (its family's ``repeatable``)."""
    return family_of(endpoint).repeatable(body) is True


def request_key(endpoint: Endpoint, body: str, mode: CacheMode) -> str | None:
    """The line's key in the cache, or None when the job's mode (or its family) leaves it uncached.

    The key is of the request as it is sent: the route (a Gemini route names its model) and the
    stored body, whose file fields hold each file's SHA-256 (``jobs.blobs.StoredFile``), so two
    uploads of the same bytes under the same name share a key and any other file does not.
    """
    if mode == CacheMode.OFF:
        return None
    parsed = orjson.loads(body)
    return parsed_key(endpoint, parsed, mode) if isinstance(parsed, dict) else None


def parsed_key(endpoint: Endpoint, parsed: dict[str, Any], mode: CacheMode) -> str | None:
    """``request_key`` of a body already parsed (the same key as of its text)."""
    if mode == CacheMode.OFF:
        return None
    repeatable = family_of(endpoint).repeatable(parsed)
    if repeatable is None or (mode == CacheMode.AUTO and not repeatable):
        return None
    canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(endpoint.path.encode() + b"\n" + canonical).hexdigest()[:KEY_CHARS]


def from_cache(item: WorkItem, kept: q.Kept) -> LineResult:
    """The line's result as the kept answer: the same body, usage and vectors, marked cached."""
    return LineResult(
        request_id=item.request_id,
        job_id=item.job_id,
        state=RequestState.SUCCEEDED,
        status_code=kept.status_code,
        response_body=kept.response_body,
        upstream_request_id=kept.upstream_request_id,
        usage=kept.usage,
        vectors=kept.vectors,
        cached=True,
    )


@dataclass(frozen=True, slots=True)
class Served:
    """A claim after the cache: the lines still to call (keyed), and how many it answered."""

    misses: list[WorkItem]
    hits: int


def serve_from_cache(session: Session, items: list[WorkItem], mode: CacheMode) -> Served:
    """Answer the claimed lines the cache holds (in this transaction); key and return the others."""
    if mode == CacheMode.OFF or not items:
        return Served(items, 0)
    keys = [_key(item, mode) for item in items]
    found = q.cached_answers(session, (k for k in keys if k is not None))
    hits: list[LineResult] = []
    used: list[str] = []
    misses: list[WorkItem] = []
    for item, key in zip(items, keys, strict=True):
        if key is not None and (kept := found.get(key)) is not None:
            hits.append(from_cache(item, kept))
            used.append(key)
        else:
            item.cache_key = key
            misses.append(item)
    if hits:
        q.record_results(session, hits)
        q.note_hits(session, used)
    return Served(misses, len(hits))


def _key(item: WorkItem, mode: CacheMode) -> str | None:
    """The line's key; its parsed body is kept on it, for the executor not to parse it again."""
    parsed = orjson.loads(item.body)
    if not isinstance(parsed, dict):
        return None
    item.request = parsed
    return parsed_key(item.endpoint, parsed, mode)


def twin_result(result: LineResult, twin: WorkItem) -> LineResult:
    """A twin's copy of its first line's result (cached when that one succeeded)."""
    ok = result.state == RequestState.SUCCEEDED
    return replace(
        result, request_id=twin.request_id, job_id=twin.job_id, cache_key=None, cached=ok, latency_ms=None
    )


SHARED_BLOCK_BYTES = 64 * 1024  # a kept answer may pin a pack's block up to this size (256 × 8 dims: 8 KB)


def _own(result: LineResult) -> LineResult:
    """The result holding only its own vectors when its pack's block is big, to keep in memory.

    A small block is kept shared (copying each line's part cost a packed line 8 µs): the
    ``RECENT_ANSWERS`` kept answers pin at most that many blocks of ``SHARED_BLOCK_BYTES``.
    """
    v = result.vectors
    if v is None or len(v.data) <= SHARED_BLOCK_BYTES:
        return result
    return replace(result, vectors=Vectors(v.raw(), v.dim, v.encoding))


Finish = Callable[[LineResult], None]
Ids = Callable[[Iterable[int]], None]


class SharedCalls:
    """Lines of one executor with one key share one call (see the module docstring)."""

    def __init__(self, *, finish: Finish, hold: Ids, let_go: Ids, remember: int = RECENT_ANSWERS) -> None:
        self._finish, self._hold, self._let_go, self._remember = finish, hold, let_go, remember
        self._twins: dict[str, list[WorkItem]] = {}  # key of a line in flight: its twins waiting
        self._keys: dict[int, str] = {}  # line in flight (request id): its key
        self._recent: OrderedDict[str, LineResult] = OrderedDict()

    async def calls(self, items: AsyncIterable[WorkItem] | Iterable[WorkItem]) -> AsyncIterator[WorkItem]:
        """The lines that need a call; twins wait for theirs."""
        if isinstance(items, AsyncIterable):
            async for item in items:
                if self.admit(item):
                    yield item
        else:
            for item in items:
                if self.admit(item):
                    yield item

    def admit(self, item: WorkItem) -> bool:
        """True when the line must be called; else it waits for (or took) its twin's result."""
        key = item.cache_key
        if key is None:
            return True
        if (done := self._recent.get(key)) is not None:
            self._finish(twin_result(done, item))
            return False
        if key in self._twins:
            self._twins[key].append(item)
            self._hold([item.request_id])
            return False
        self._twins[key], self._keys[item.request_id] = [], key
        return True

    def settled(self, result: LineResult) -> None:
        """A line's result landed: its twins take a copy."""
        key = self._keys.pop(result.request_id, None)
        if key is None:
            return
        twins = self._twins.pop(key)
        if result.state == RequestState.SUCCEEDED and self._remember:
            self._recent[key] = _own(result)
            while len(self._recent) > self._remember:
                self._recent.popitem(last=False)
        if twins:
            self._let_go([t.request_id for t in twins])
        for twin in twins:
            self._finish(twin_result(result, twin))

    def released(self, items: Sequence[WorkItem]) -> list[WorkItem]:
        """Lines given back, with the twins that were waiting for them."""
        out = list(items)
        for item in items:
            key = self._keys.pop(item.request_id, None)
            if key is not None:
                twins = self._twins.pop(key)
                self._let_go([t.request_id for t in twins])
                out += twins
        return out
