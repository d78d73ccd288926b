"""Versioned schema: named migrations applied in order, recorded in ``batcher_migrations``.

Each migration is frozen: it spells out its own DDL with SQLAlchemy Core instead of reading the
current models, so a fresh database and an old one that is upgraded end with the same schema.
A test compares the migrated schema with ``jobs.models`` so the two cannot drift apart. To change
the schema, append a new migration; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_TABLE = "batcher_migrations"

Migration = Callable[[Connection], None]


def _m001_initial(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "job", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("source_path", sa.String, nullable=False),
        sa.Column("source_sha256", sa.String, nullable=False, index=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("mode", sa.String, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        *(sa.Column(n, sa.Integer, nullable=False) for n in ("total", "succeeded", "failed", "cancelled")),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )  # fmt: skip
    sa.Table(
        "request", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("job.id"), nullable=False),
        sa.Column("custom_id", sa.String, nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("endpoint", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("est_tokens", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claims", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("enqueued_at", sa.Float),
        sa.Column("error_code", sa.String),
        sa.Column("last_error", sa.Text),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_body", sa.Text),
        sa.Column("audio_path", sa.String),
        sa.Column("audio_bytes", sa.Integer),
        sa.Column("audio_format", sa.String),
        sa.Column("upstream_request_id", sa.String),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("characters", sa.Integer),
        sa.Column("usage_estimated", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("job_id", "custom_id", name="uq_request_job_custom_id"),
        sa.Index("ix_request_job_state", "job_id", "state"),
        sa.Index("ix_request_job_line", "job_id", "line_no"),
    )  # fmt: skip
    sa.Table(
        "attempt", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.Integer, sa.ForeignKey("request.id"), nullable=False, index=True),
        sa.Column("job_id", sa.Integer, nullable=False, index=True),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("error_class", sa.String, nullable=False),
        sa.Column("error_message", sa.Text),
        sa.Column("sent", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("characters", sa.Integer),
        sa.Column("usage_estimated", sa.Boolean, nullable=False),
        sa.Column("upstream_request_id", sa.String),
        sa.Column("call_id", sa.String),
        sa.Column("worker", sa.String),
    )  # fmt: skip
    md.create_all(conn)


def _m002_vectors(conn: Connection) -> None:
    """Embedding vectors as float32 bytes, one block per call, not JSON text in the body."""
    md = sa.MetaData()
    block = sa.Table(
        "vector_block", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("encoding", sa.String, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )  # fmt: skip
    block.create(conn)
    for column in ("vector_block", "vector_start", "vector_count"):
        conn.execute(sa.text(f"ALTER TABLE request ADD COLUMN {column} INTEGER"))
    if conn.dialect.name == "postgresql":
        # float32 noise does not compress: skip TOAST's attempt, store the bytes out of line as they are.
        conn.execute(sa.text("ALTER TABLE vector_block ALTER COLUMN data SET STORAGE EXTERNAL"))


def _m003_claim_index(conn: Connection) -> None:
    """Claims read a job's pending lines in line order straight from an index.

    (job_id, state) alone made a claim walk the job from its first line past every finished one:
    a cost that grew with the lines done, so a whole job cost the square of its size.
    """
    md = sa.MetaData()
    request = sa.Table(
        "request",
        md,
        *(sa.Column(name, sa.Integer) for name in ("job_id", "line_no")),
        sa.Column("state", sa.String),
    )
    sa.Index("ix_request_job_state_line", request.c.job_id, request.c.state, request.c.line_no).create(conn)
    sa.Index("ix_request_job_state", request.c.job_id, request.c.state).drop(conn)


def _m004_learned_pace(conn: Connection) -> None:
    """The pace a job found per (provider, model), so the next one starts from it."""
    md = sa.MetaData()
    sa.Table(
        "learned_pace", md,
        sa.Column("provider", sa.String, primary_key=True),
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("requests_per_s", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ).create(conn)  # fmt: skip


def _m005_executors(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "executor", md,
        sa.Column("owner", sa.String, primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False, index=True),
        sa.Column("in_flight", sa.Integer, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )  # fmt: skip
    md.create_all(conn)


def _m006_files(conn: Connection) -> None:
    """Input files (audio, images) kept by content, and usage in seconds of audio and images.

    ``blob`` is one row per distinct file (its sha256); its bytes are ``blob_chunk`` rows of at
    most 1 MiB, or a file in the shared blob folder (``location = 'dir'``). ``job_blob`` says
    which jobs use a blob, so deleting the last of them deletes it.
    """
    md = sa.MetaData()
    sa.Table(
        "blob", md,
        sa.Column("sha256", sa.String, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("location", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    sa.Table(
        "blob_chunk", md,
        sa.Column("sha256", sa.String, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )  # fmt: skip
    sa.Table(
        "job_blob", md,
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String, primary_key=True, index=True),
    )  # fmt: skip
    md.create_all(conn)
    for table in ("request", "attempt"):
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN seconds FLOAT"))
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN images INTEGER"))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE blob_chunk ALTER COLUMN data SET STORAGE EXTERNAL"))


def _m007_cache_write(conn: Connection) -> None:
    """Prompt tokens written to a provider's cache (Claude's cache creation, 5 min and 1 h)."""
    for table in ("request", "attempt"):
        for column in ("cache_write_tokens", "cache_write_1h_tokens"):
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER"))


def _m008_tasks(conn: Connection) -> None:
    """One row per task line's relay task (Midjourney, Suno, video): its id, state and progress."""
    md = sa.MetaData()
    sa.Table(
        "task", md,
        sa.Column("request_id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False, index=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("relay_task_id", sa.String),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("next_poll_at", sa.Float, nullable=False),
        sa.Column("polls", sa.Integer, nullable=False),
        sa.Column("progress", sa.String),
        sa.Column("relay_status", sa.String),
    )  # fmt: skip
    md.create_all(conn)


def _m009_task_calls(conn: Connection) -> None:
    """Per-call charges a call stands for when not one (a video task: seconds × size ratio)."""
    for table in ("request", "attempt"):
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN calls FLOAT"))


def _m010_price_key(conn: Connection) -> None:
    """The price table's name for a line billed apart from its model (an image's quality and size)."""
    conn.execute(sa.text("ALTER TABLE request ADD COLUMN price_key VARCHAR"))


def _m011_response_cache(conn: Connection) -> None:
    """Keys of requests answered before, which lines were answered from them, and which provider
    and key took each call."""
    md = sa.MetaData()
    sa.Table(
        "response_cache", md,
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("request_id", sa.Integer, nullable=False, index=True),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_hit_at", sa.DateTime(timezone=True)),
    ).create(conn)  # fmt: skip
    false = "false" if conn.dialect.name == "postgresql" else "0"
    conn.execute(sa.text(f"ALTER TABLE request ADD COLUMN cached BOOLEAN NOT NULL DEFAULT {false}"))
    conn.execute(sa.text("ALTER TABLE attempt ADD COLUMN provider VARCHAR"))
    conn.execute(sa.text("ALTER TABLE request ADD COLUMN provider VARCHAR"))


UNANSWERED = "status_code IS NULL OR error_class = 'bad_body'"
"""The calls that may have gone unanswered (``batcher.usage``'s unknown kind): a partial index."""


def _m012_usage_rollup(conn: Connection) -> None:
    """Sums of the calls that answered, by job, day, model and provider, folded by the usage
    report (``jobs.store.rollup``), the mark of how far, and partial indexes of the unanswered calls
    and of the lines answered from the response cache (what the report still reads line by line)."""
    md = sa.MetaData()
    sums = ("calls", "billed_calls", "prompt_tokens", "completion_tokens", "characters", "cached_tokens",
            "reasoning_tokens", "cache_write_tokens", "cache_write_1h_tokens", "images")  # fmt: skip
    sa.Table(
        "usage_rollup", md,
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("day", sa.String, primary_key=True),
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("provider", sa.String, primary_key=True),
        sa.Column("price_key", sa.String, primary_key=True),
        sa.Column("per_image", sa.Boolean, primary_key=True),
        *(sa.Column(n, sa.BigInteger, nullable=False) for n in sums),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("task_calls", sa.Float, nullable=False),
        sa.Column("charges", sa.Float, nullable=False),
    ).create(conn)  # fmt: skip
    mark = sa.Table(
        "rollup_mark", md,
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("attempt_id", sa.BigInteger, nullable=False),
    )  # fmt: skip
    mark.create(conn)
    conn.execute(mark.insert().values(name="usage", attempt_id=0))
    conn.execute(sa.text(f"CREATE INDEX ix_attempt_unanswered ON attempt (id) WHERE {UNANSWERED}"))
    conn.execute(sa.text("CREATE INDEX ix_request_cached ON request (job_id) WHERE cached"))


def _m013_modal_step(conn: Connection) -> None:
    """A Midjourney modal step is its own charged call: its state on the task, its price on the attempt."""
    conn.execute(sa.text("ALTER TABLE task ADD COLUMN modal VARCHAR"))
    conn.execute(sa.text("ALTER TABLE task ADD COLUMN modal_at FLOAT"))
    conn.execute(sa.text("ALTER TABLE attempt ADD COLUMN price_key VARCHAR"))


def _m014_attempt_lines(conn: Connection) -> None:
    """An answered packed call is one attempt row for all its lines: how many it carried."""
    conn.execute(sa.text("ALTER TABLE attempt ADD COLUMN lines INTEGER"))


def _m015_task_final_quota(conn: Connection) -> None:
    """The relay's final charge of a task (its poll answer's quota at success), on the task, on the
    call it bills, and summed in the rollup apart from the calls priced by the price table."""
    conn.execute(sa.text("ALTER TABLE task ADD COLUMN final_quota BIGINT"))
    conn.execute(sa.text("ALTER TABLE attempt ADD COLUMN relay_quota BIGINT"))
    for column in ("relay_calls", "relay_quota"):
        conn.execute(sa.text(f"ALTER TABLE usage_rollup ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0"))


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_initial", _m001_initial),
    ("0002_vectors", _m002_vectors),
    ("0003_claim_index", _m003_claim_index),
    ("0004_learned_pace", _m004_learned_pace),
    ("0005_executors", _m005_executors),
    ("0006_files", _m006_files),
    ("0007_cache_write", _m007_cache_write),
    ("0008_tasks", _m008_tasks),
    ("0009_task_calls", _m009_task_calls),
    ("0010_price_key", _m010_price_key),
    ("0011_response_cache", _m011_response_cache),
    ("0012_usage_rollup", _m012_usage_rollup),
    ("0013_modal_step", _m013_modal_step),
    ("0014_attempt_lines", _m014_attempt_lines),
    ("0015_task_final_quota", _m015_task_final_quota),
]

_ledger = sa.Table(
    MIGRATIONS_TABLE,
    sa.MetaData(),
    sa.Column("name", sa.String, primary_key=True),
    sa.Column(
        "applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.current_timestamp()
    ),
)


def applied_migrations(conn: Connection) -> set[str]:
    """The names of the migrations this database has already run."""
    _ledger.create(conn, checkfirst=True)
    return {row[0] for row in conn.execute(sa.select(_ledger.c.name))}


def _serialize(conn: Connection) -> None:
    """Make concurrent migrators (several workers starting at once) take turns.

    SQLite's ``BEGIN IMMEDIATE`` (see ``jobs.db``) already does; PostgreSQL needs a lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7311985)"))


def migrate(engine: Engine) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction; return their names."""
    ran: list[str] = []
    for name, migration in MIGRATIONS:
        with engine.begin() as conn:
            _serialize(conn)
            if name in applied_migrations(conn):
                continue
            migration(conn)
            conn.execute(sa.insert(_ledger).values(name=name))
            ran.append(name)
    return ran
