"""Ingest: validate an input file and store its lines as a new job, all or nothing.

One pass over the file inside one transaction: valid lines are inserted in chunks (one
executemany each) while every problem is collected. If any line is invalid and ``skip_invalid`` is
off, the transaction rolls back, so nothing is stored, and the error lists every problem. With
``skip_invalid`` the valid lines are stored and the rejected ones are written, with their reasons,
to a rejects file. Memory stays flat: one chunk of rows at a time, and at most ``MAX_PROBLEMS``
problems kept for the message (the rejects file and ``batcher validate`` have them all).

A file whose content (sha256) was already submitted returns the existing job unless ``new``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from batcher.reader import ParsedLine, ReadOptions, file_sha256, read_requests
from jobs import store as q
from jobs.db import Store
from jobs.errors import InputError, Problem
from jobs.models import Job, RequestState
from jobs.options import JobOptions
from workers.tokens import reservation_tokens

MAX_PROBLEMS = 1000
CHUNK_ROWS = 2000


@dataclass(frozen=True)
class IngestOptions:
    """How to read the file and what to store with the job."""

    read: ReadOptions = field(default_factory=ReadOptions)
    skip_invalid: bool = False
    rejects_path: Path | None = None
    new: bool = False
    name: str | None = None
    job_options: JobOptions = field(default_factory=JobOptions)
    priority: int = 5


@dataclass(frozen=True)
class IngestResult:
    """What ingest did: the job, whether it is new, how many lines were stored and rejected."""

    job: Job
    created: bool
    stored: int
    rejected: int = 0
    rejects_path: Path | None = None


def default_rejects_path(path: Path) -> Path:
    """Where rejected lines go by default: beside the input, ``NAME.rejects.jsonl``."""
    return path.with_name(path.stem + ".rejects.jsonl")


def ingest_file(store: Store, path: Path, options: IngestOptions) -> IngestResult:
    """Store the file's lines as a job (or return the job already made from the same content)."""
    sha256 = file_sha256(path)
    if not options.new:
        with store.session() as session:
            existing = q.find_job_by_source(session, sha256)
        if existing is not None:
            return IngestResult(existing, created=False, stored=existing.total)
    with store.session() as session:
        job = q.create_job(
            session,
            name=options.name or path.name,
            source_path=str(path.resolve()),
            source_sha256=sha256,
            options=options.job_options,
        )
        assert job.id is not None
        job.priority = options.priority
        stored, problems, rejected = _store_lines(session, job.id, path, options)
        _check(path, options, stored, problems, rejected)
        job.total = stored
        session.add(job)
    rejects = _write_rejects(path, options, problems) if rejected else None
    return IngestResult(job, created=True, stored=stored, rejected=rejected, rejects_path=rejects)


def _store_lines(
    session: Any, job_id: int, path: Path, options: IngestOptions
) -> tuple[int, list[Problem], int]:
    stored, rejected = 0, 0
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    for item in read_requests(path, options.read):
        if isinstance(item, Problem):
            rejected += 1
            if len(problems) < MAX_PROBLEMS or options.skip_invalid:
                problems.append(item)
            continue
        if rejected and not options.skip_invalid:
            continue  # the file will be refused: keep validating, stop inserting
        rows.append(_row(job_id, item))
        if len(rows) >= CHUNK_ROWS:
            q.insert_requests(session, rows)
            stored, rows = stored + len(rows), []
    q.insert_requests(session, rows)
    return stored + len(rows), problems, rejected


def _row(job_id: int, line: ParsedLine) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "custom_id": line.custom_id,
        "line_no": line.line_no,
        "endpoint": line.endpoint.value,
        "model": line.model,
        "body": line.body_json.decode(),
        "est_tokens": reservation_tokens(line.endpoint.value, line.body),
        "state": RequestState.PENDING.value,
        "attempts": 0,
        "claims": 0,
        "usage_estimated": False,
    }


def _check(path: Path, options: IngestOptions, stored: int, problems: list[Problem], rejected: int) -> None:
    if rejected and not options.skip_invalid:
        hint = (
            "Fix the lines above, or pass --skip-invalid to store the valid lines and write the rest "
            "to a rejects file; `batcher validate FILE` lists every problem."
        )
        raise InputError(str(path), problems, hint=hint, total=rejected)
    if stored == 0:
        raise InputError(
            str(path),
            problems,
            hint=f"{path} has no valid request lines; nothing was stored.",
            total=rejected,
        )


def _write_rejects(path: Path, options: IngestOptions, problems: list[Problem]) -> Path:
    target = options.rejects_path or default_rejects_path(path)
    reasons: dict[int, list[str]] = {}
    for problem in problems:
        reasons.setdefault(problem.line, []).append(problem.message)
    with target.open("w", encoding="utf-8") as out:
        for line_no, raw in _raw_lines(path, set(reasons)):
            _write_reject(out, line_no, reasons[line_no], raw)
    return target


def _write_reject(out: TextIO, line_no: int, reasons: list[str], raw: bytes) -> None:
    record = {"line": line_no, "errors": reasons, "raw": raw.decode("utf-8", "replace").rstrip("\r\n")}
    out.write(orjson.dumps(record).decode() + "\n")


def _raw_lines(path: Path, wanted: set[int]) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no in wanted:
                yield line_no, raw[:1_000_000]
