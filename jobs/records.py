"""Plain records that cross the store's boundary: a claimed line, an upstream call, a line's result.

The execution core builds these; the store writes them. The per-line records are not frozen: a
frozen dataclass sets each field through ``object.__setattr__``, which made building them a
tenth of a run's CPU; nothing changes them once built. ``Usage`` is not frozen for the same
reason (a packed call builds one per line: 3.6 µs frozen, 0.6 µs not); treat it as a value.
Keeping them free of SQLModel lets the core stay ignorant of sessions and lets a Celery task and
the embedded runner share one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from jobs.endpoints import Endpoint
from jobs.vectors import Vectors


@dataclass(slots=True)
class WorkItem:
    """A line claimed for execution, with what the call needs."""

    request_id: int
    job_id: int
    custom_id: str
    endpoint: Endpoint
    model: str
    body: str
    attempts: int
    est_tokens: int
    cache_key: str | None = None  # the request's key in the response cache, when it may be cached
    # ``body`` parsed, when the claim already parsed it (for its cache key): the executor takes it
    # instead of parsing the line again. Never changed once set.
    request: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Usage:
    """What one call (or a sum of calls) used: tokens, or characters for speech.

    The one shape of usage everywhere: parsed from an answer, stored with a line and an attempt,
    priced (``workers.cost``), summed in reports. Cached (read) and cache-write tokens are parts of
    ``prompt_tokens``, reasoning tokens part of ``completion_tokens``; ``total_tokens`` is what
    the API reported. ``estimated`` when batcher had to estimate it (the answer had none).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    characters: int = 0
    estimated: bool = False
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # part of prompt_tokens written to the cache (Claude), 1h ones included
    cache_write_1h_tokens: int = 0  # part of cache_write_tokens written for an hour
    seconds: Decimal = Decimal(0)  # transcribed audio
    images: int = 0
    calls: Decimal = Decimal(0)  # per-call charges when not one: a video's seconds × size ratio

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens (cached and reasoning tokens are parts of those)."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """The usage of both (estimated when either was)."""
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            characters=self.characters + other.characters,
            estimated=self.estimated or other.estimated,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            seconds=self.seconds + other.seconds,
            images=self.images + other.images,
            calls=self.calls + other.calls,
        )


STEP = "step"  # the outcome of a charged step after a line's first call (a Midjourney modal submit)


@dataclass(slots=True)
class AttemptRecord:
    """One upstream call: for one line, or for every line of a packed call that was answered.

    A packed call that got an answer is one record (and one row) for all its lines: ``request_id``
    and ``attempt_no`` are its first line's, ``carried`` every line's (line id, attempt number),
    ``usage`` the whole call's. Rows per line made a packed embedding line's attempt a third of its
    run. A call that got no answer stays a record per line: what it may have cost is estimated
    from each line it carried (``batcher.usage``'s unknown kind).
    """

    request_id: int
    job_id: int
    attempt_no: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error_class: str
    error_message: str | None = None
    sent: bool = True
    usage: Usage | None = None
    upstream_request_id: str | None = None
    worker: str | None = None
    call_id: str | None = None
    provider: str | None = None  # the provider and key (name and last 4 characters) it went to
    price_key: str | None = None  # priced by this name, not its line's (a task's modal step: mj_modal)
    carried: tuple[tuple[int, int], ...] = ()  # a packed call's lines and their attempt numbers
    relay_quota: int | None = None  # the relay's own final charge of the call, in quota (a task's)

    @property
    def lines(self) -> tuple[tuple[int, int], ...]:
        """Each line the call carried, with its attempt number (its own line alone when not packed)."""
        return self.carried or ((self.request_id, self.attempt_no),)


@dataclass(slots=True)
class LineResult:
    """The terminal result of one line: succeeded with a response, or failed with an error."""

    request_id: int
    job_id: int
    state: str
    status_code: int | None = None
    response_body: str | None = None
    audio_path: str | None = None
    audio_bytes: int | None = None
    audio_format: str | None = None
    upstream_request_id: str | None = None
    usage: Usage | None = None
    latency_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    vectors: Vectors | None = None  # an embedding answer's vectors, kept apart from its body
    cache_key: str | None = None  # a fresh answer to keep in the response cache under this key
    cached: bool = False  # answered from the response cache (or a twin line's call), not called
    provider: str | None = None  # provider/key label of the call that answered (routed calls)


@dataclass(slots=True)
class ResultLine:
    """A line as an export reads it: its result, usage and vectors."""

    id: int
    custom_id: str
    line_no: int
    state: str
    endpoint: str
    model: str
    status_code: int | None
    upstream_request_id: str | None
    response_body: str | None
    audio_path: str | None
    audio_format: str | None
    audio_bytes: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    characters: int | None
    usage_estimated: bool
    latency_ms: int | None
    attempts: int
    error_code: str | None
    last_error: str | None
    cached: bool
    provider: str | None
    vectors: Vectors | None
