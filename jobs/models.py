"""The tables of the SQL store: Job, Request (one input line) and Attempt (one upstream call).

The store is the source of truth: a line's state, lease, result and usage live here, and the
broker only ever carries ids. Times that people read are timezone-aware UTC datetimes; the lease
clock is a float of epoch seconds so that lease arithmetic is the same on SQLite and PostgreSQL.

Cost is billed per upstream call, so every call is an ``Attempt`` row, also when a retry of the
same line later succeeds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Float, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what the store's datetime columns take)."""
    return datetime.now(UTC)


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"  # stored, waiting for an executor
    RUNNING = "running"
    PAUSED = "paused"  # no new calls until resumed
    STOPPED = "stopped"  # the API refused the job (key, quota): fix and resume
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # every line is terminal (some may have failed)


class RequestState(StrEnum):
    """Where one line is in its life; the last three are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED)
ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class UsageColumns(SQLModel):
    """The usage columns a line (its stored result) and an attempt (one call) both have."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # part of prompt_tokens served from the provider's cache
    reasoning_tokens: int | None = None  # part of completion_tokens spent reasoning
    cache_write_tokens: int | None = None  # part of prompt_tokens written to the cache (Claude)
    cache_write_1h_tokens: int | None = None  # part of cache_write_tokens kept for an hour
    characters: int | None = None  # speech is billed per input character
    seconds: float | None = None  # transcription is billed per second of audio
    images: int | None = None  # image generation is billed per image
    calls: float | None = None  # per-call charges when not one (a video task's seconds × size)
    usage_estimated: bool = False


class Job(SQLModel, table=True):
    """One submitted input file and what became of it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    source_path: str
    source_sha256: str = Field(index=True)
    status: str = Field(default=JobStatus.QUEUED)
    mode: str = Field(default="embedded")  # "embedded" (run in-process) or "celery" (workers)
    priority: int = 5  # Celery priority of its messages: 0 is served first, 9 last
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    options: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Request(UsageColumns, table=True):
    """One input line: the request as submitted, its state, lease, result and usage."""

    __table_args__ = (
        UniqueConstraint("job_id", "custom_id", name="uq_request_job_custom_id"),
        Index("ix_request_job_state_line", "job_id", "state", "line_no"),
        Index("ix_request_job_line", "job_id", "line_no"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id")
    custom_id: str
    line_no: int
    endpoint: str
    model: str
    price_key: str | None = None  # the price table's name when not the model (``Family.price_key``)
    body: str = Field(sa_column=Column(Text, nullable=False))
    est_tokens: int = 0
    state: str = Field(default=RequestState.PENDING)
    attempts: int = 0
    claims: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    enqueued_at: float | None = None
    error_code: str | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(Text))
    audio_path: str | None = None
    audio_bytes: int | None = None
    audio_format: str | None = None
    upstream_request_id: str | None = None
    latency_ms: int | None = None
    finished_at: datetime | None = None
    vector_block: int | None = None  # the VectorBlock holding this line's vectors
    vector_start: int | None = None
    vector_count: int | None = None
    cached: bool = False  # answered from the response cache (or a twin line's call), never called
    provider: str | None = None  # provider/key label of the call that answered (batcher.toml routing)


class Attempt(UsageColumns, table=True):
    """One upstream call: what it answered and what it used (a packed call's: see ``lines``)."""

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    job_id: int = Field(index=True)
    attempt_no: int
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    outcome: str
    error_class: str
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    sent: bool = True
    upstream_request_id: str | None = None
    call_id: str | None = None  # one per HTTP call: the lines of a packed call share it
    worker: str | None = None
    provider: str | None = None  # provider/key label that took the call (batcher.toml routing)
    price_key: str | None = None  # the call's price name when not its line's (a task's modal step)
    lines: int | None = None  # lines an answered packed call carried (its first is request_id); NULL: one
    # What the relay said it finally charged for the call, in quota (a task's final quota):
    # the call costs that, not its price-table charge.
    relay_quota: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class VectorBlock(SQLModel, table=True):
    """One call's embedding vectors as little-endian float32 bytes (see ``jobs.vectors``).

    A succeeded line points to its vectors here: ``Request.vector_block``, from ``vector_start``,
    ``vector_count`` of them.
    """

    __tablename__ = "vector_block"

    id: int | None = Field(default=None, primary_key=True)
    dim: int
    encoding: str  # "float" or "base64": how the API sent them, and so how the export writes them
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class CachedAnswer(SQLModel, table=True):
    """A key of the response cache: the hash of a canonical request (``workers.cache``) and the
    succeeded line whose answer it reuses.

    A reference, not a copy: a kept answer costs a row of a few dozen bytes, whatever the size
    of its vectors; a line answered from it gets its own copy of the body and vectors, so deleting
    either job never takes the other's results (deleting the paying job drops its keys).
    """

    __tablename__ = "response_cache"

    key: str = Field(primary_key=True)
    request_id: int = Field(index=True)
    hits: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    last_hit_at: datetime | None = None


class LearnedPace(SQLModel, table=True):
    """The request pace a job found for one (provider, model), where the next job starts."""

    __tablename__ = "learned_pace"

    provider: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    requests_per_s: float
    updated_at: datetime = Field(default_factory=utcnow)


class Executor(SQLModel, table=True):
    """An executor at work on a job: how many calls it has in flight, as of ``seen_at``.

    Each executor (a ``batcher run`` or one worker chunk) writes its row every control interval
    and deletes it when it ends; ``status`` sums the fresh rows into the job's calls in flight.
    """

    owner: str = Field(primary_key=True)
    job_id: int = Field(index=True)
    in_flight: int = 0
    seen_at: float = 0.0  # epoch seconds, like the lease clock


class Blob(SQLModel, table=True):
    """One input file (audio, an image) a line sends, kept once by its sha256 (``jobs.blobs``).

    ``location`` is ``db`` (its bytes are ``BlobChunk`` rows) or ``dir`` (a file in the shared
    blob folder, ``BATCHER_BLOB_DIR``).
    """

    sha256: str = Field(primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    location: str
    created_at: datetime = Field(default_factory=utcnow)


class BlobChunk(SQLModel, table=True):
    """At most ``jobs.blobs.CHUNK_BYTES`` of a blob's bytes, in order of ``seq``."""

    __tablename__ = "blob_chunk"

    sha256: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class JobBlob(SQLModel, table=True):
    """A job uses a blob: deleting the last job that does deletes the blob."""

    __tablename__ = "job_blob"

    job_id: int = Field(primary_key=True)
    sha256: str = Field(primary_key=True, index=True)


class TaskState(StrEnum):
    """Where a line's relay task is (``workers.taskengine``); the last two are terminal.

    ``submitting`` is written before the submit call goes: a row left in it after a crash is a
    submit whose outcome nobody knows, never sent again by itself.
    """

    SUBMITTING = "submitting"
    SUBMITTED = "submitted"  # the relay's task id is stored
    POLLING = "polling"  # the relay reported it queued or running
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ModalState(StrEnum):
    """Where a Midjourney task's modal step (``/mj/submit/modal``, a second charged submit) is.

    ``submitting`` is written before the modal submit goes, like a task's ``submitting``: a row
    left in it is a modal step whose outcome nobody knows, never sent again by itself. ``retry``:
    ``batcher retry --unknown`` put it back; the next poll tells whether it went (the task is no
    longer ``MODAL``: it is counted taken) or is to be sent again.
    """

    SUBMITTING = "submitting"
    TAKEN = "taken"
    RETRY = "retry"


class Task(SQLModel, table=True):
    """The relay task of one task line (Midjourney, Suno, video): its id, progress and deadline."""

    request_id: int = Field(primary_key=True)
    job_id: int = Field(index=True)
    state: str = Field(default=TaskState.SUBMITTING)
    relay_task_id: str | None = None
    submitted_at: float = 0.0  # epoch seconds, like the lease clock
    next_poll_at: float = 0.0
    polls: int = 0
    progress: str | None = None  # the relay's own, "37%"
    relay_status: str | None = None
    modal: str | None = None  # ``ModalState`` of its modal step, when it has one
    modal_at: float | None = None  # when the modal step was sent
    # The relay's final charge in quota, read from its poll answer at success (a TaskDto's
    # ``quota``: new-api re-prices a Kling task by the units its upstream deducted).
    final_quota: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


def _sum_column() -> Any:  # a fresh Column each: SQLAlchemy binds a Column to one table
    return Field(default=0, sa_column=Column(BigInteger, nullable=False))


class UsageRollup(SQLModel, table=True):
    """Sums of the calls that answered, by job, UTC day, model and provider (``jobs.store.rollup``).

    Folded from the attempts by the usage report's readers, never written by a run: one row per
    group, so a report over ten million calls reads groups, not calls. ``per_image``: the calls
    reported no tokens, so their images are billed by the image (``workers.cost``).
    """

    __tablename__ = "usage_rollup"

    job_id: int = Field(primary_key=True)
    day: str = Field(primary_key=True)  # YYYY-MM-DD, UTC, of the calls' start
    model: str = Field(primary_key=True)  # the line's model
    provider: str = Field(primary_key=True)  # provider/key label ('' when calls are not routed)
    price_key: str = Field(primary_key=True)  # the line's price name when not its model ('' if none)
    per_image: bool = Field(primary_key=True)
    calls: int = _sum_column()  # HTTP calls: a packed call's lines count once
    billed_calls: int = _sum_column()  # of which answered with usage
    prompt_tokens: int = _sum_column()
    completion_tokens: int = _sum_column()
    characters: int = _sum_column()
    cached_tokens: int = _sum_column()
    reasoning_tokens: int = _sum_column()
    cache_write_tokens: int = _sum_column()
    cache_write_1h_tokens: int = _sum_column()
    images: int = _sum_column()
    task_calls: float = Field(default=0.0, sa_column=Column(Float, nullable=False))  # Usage.calls summed
    charges: float = Field(default=0.0, sa_column=Column(Float, nullable=False))  # per-call charges
    relay_calls: int = _sum_column()  # of the billed calls, those the relay said its charge of
    relay_quota: int = _sum_column()  # what it said it charged for them (their charges not counted)
    seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))


class RollupMark(SQLModel, table=True):
    """How far the attempts are folded into ``usage_rollup``: every id up to ``attempt_id``."""

    __tablename__ = "rollup_mark"

    name: str = Field(primary_key=True)
    attempt_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
