"""Plain records that cross the store's boundary: a claimed line, an upstream call, a line's result.

The execution core builds these; the store writes them. Keeping them free of SQLModel lets the
core stay ignorant of sessions and lets a Celery task and the embedded runner share one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A line claimed for execution, with what the call needs."""

    request_id: int
    job_id: int
    custom_id: str
    endpoint: str
    model: str
    body: str
    attempts: int
    est_tokens: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens (or characters, for speech) one call used; ``estimated`` when the answer had none."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    characters: int = 0
    estimated: bool = False
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One upstream call for one line."""

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


@dataclass(frozen=True, slots=True)
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
