"""Ingest: validate an input file and store its lines as a new job, all or nothing.

One pass over the file inside one transaction: valid lines are inserted in chunks (one
executemany each) while every problem is collected. If any line is invalid and ``skip_invalid`` is
off, the transaction rolls back, so nothing is stored, and the error lists every problem. With
``skip_invalid`` the valid lines are stored and the rejected ones are written, with their reasons,
to a rejects file, streamed as the file is read (beside the target as ``.part`` until the job is
stored). Memory stays flat: one chunk of rows at a time, at most ``MAX_PROBLEMS`` problems kept for
the message and the rest only counted (the rejects file and ``batcher validate`` have them all),
and a rejected line's bytes are never read whole.

A file whose content (sha256) was already submitted returns the existing job unless ``new``. With
a ``catalog`` (the models the providers list), a line naming a model none serves refuses the file
the same way, each such line named with the closest served names.

The input files lines name (audio, images) go into the blob store (``jobs.blobs``) in the same
transaction, each once however many lines name it, and the job is linked to them; when ingest
fails, files it wrote to a shared blob folder are removed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from batcher.estimate import Estimate, EstimateBuilder
from batcher.reader import ParsedLine, ReadOptions, file_sha256, read_requests
from jobs import store as q
from jobs.blobs import BlobStore
from jobs.db import Store
from jobs.errors import InputError, Problem
from jobs.models import Job
from jobs.options import JobOptions
from jobs.store.blobs import link_blobs
from workers.catalog import ModelCatalog

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
    estimate: EstimateBuilder | None = None  # fed every stored line: the estimate without a second read
    blob_dir: Path | None = None  # BATCHER_BLOB_DIR: input files go there instead of the SQL store
    catalog: ModelCatalog | None = None  # the models some provider serves; None: not checked


@dataclass(frozen=True)
class IngestResult:
    """What ingest did: the job, whether it is new, how many lines were stored and rejected."""

    job: Job
    created: bool
    stored: int
    rejected: int = 0
    rejects_path: Path | None = None
    estimate: Estimate | None = None  # of the stored lines, when asked for (``IngestOptions.estimate``)


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
    rejects = _Rejects(options.rejects_path or default_rejects_path(path)) if options.skip_invalid else None
    blobs = BlobStore(options.blob_dir)
    try:
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
            unserved = _Unserved(str(path), options.catalog)
            stored, problems, rejected = _store_lines(
                session, job.id, path, options, rejects=rejects, blobs=blobs, unserved=unserved
            )
            _check(path, options, stored, problems, rejected)
            unserved.check()
            job.total = stored
            session.add(job)
    except BaseException:
        blobs.discard_new()
        if rejects is not None:
            rejects.discard()
        raise
    target = rejects.keep() if rejects is not None and rejected else None
    if rejects is not None and not rejected:
        rejects.discard()
    estimate = options.estimate.result() if options.estimate is not None else None
    return IngestResult(
        job, created=True, stored=stored, rejected=rejected, rejects_path=target, estimate=estimate
    )


class _Rejects:
    """The rejects file, written line by line as problems are found; kept only if ingest succeeds."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.part = target.with_name(target.name + ".part")
        self._out: TextIO = self.part.open("w", encoding="utf-8")

    def write(self, problem: Problem, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        record = {"line": problem.line, "errors": [problem.message], "raw": text}
        self._out.write(orjson.dumps(record).decode() + "\n")

    def keep(self) -> Path:
        self._out.close()
        self.part.replace(self.target)
        return self.target

    def discard(self) -> None:
        self._out.close()
        self.part.unlink(missing_ok=True)


class _Unserved:
    """Lines naming a model no provider serves: the first few of each model, for the message."""

    PER_MODEL = 5

    def __init__(self, path: str, catalog: ModelCatalog | None) -> None:
        self.path, self.catalog = path, catalog
        self.lines: dict[str, list[int]] = {}
        self.total = 0

    def see(self, line: ParsedLine) -> None:
        if self.catalog is None or self.catalog.serves(line.model):
            return
        self.total += 1
        seen = self.lines.setdefault(line.model, []) if len(self.lines) < MAX_PROBLEMS else []
        if len(seen) < self.PER_MODEL:
            seen.append(line.line_no)

    def check(self) -> None:
        """Refuse the file (the transaction rolls back) when a line names an unserved model."""
        if not self.total or self.catalog is None:
            return
        problems = [
            Problem(
                self.path,
                n,
                f'model "{model}" is not served by any configured provider{_closest(self.catalog, model)}',
            )
            for model, numbers in self.lines.items()
            for n in numbers
        ]
        hint = (
            "Fix the model names, or add a provider that serves them (`batcher models` lists what is served)."
        )
        raise InputError(self.path, problems, hint=hint, total=self.total)


def _closest(catalog: ModelCatalog, model: str) -> str:
    names = catalog.closest(model)
    return f"; closest served: {', '.join(names)}" if names else ""


def _store_lines(
    session: Any,
    job_id: int,
    path: Path,
    options: IngestOptions,
    *,
    rejects: _Rejects | None,
    blobs: BlobStore,
    unserved: _Unserved,
) -> tuple[int, list[Problem], int]:
    stored, rejected = 0, 0
    used: set[str] = set()
    problems: list[Problem] = []
    rows: list[tuple[Any, ...]] = []
    on_reject = rejects.write if rejects is not None else None
    for item in read_requests(path, options.read, on_reject=on_reject):
        if isinstance(item, Problem):
            rejected += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(item)
            continue
        if rejected and not options.skip_invalid:
            continue  # the file will be refused: keep validating, stop inserting
        rows.append(_row(job_id, item))
        for local in item.files:
            blobs.put(session, local.stored.sha256, local.stored.size, local.chunks())
            used.add(local.stored.sha256)
        unserved.see(item)
        if options.estimate is not None:
            options.estimate.add(item)
        if len(rows) >= CHUNK_ROWS:
            q.insert_request_values(session, _COLUMNS, rows)
            stored, rows = stored + len(rows), []
    q.insert_request_values(session, _COLUMNS, rows)
    if not rejected or options.skip_invalid:
        link_blobs(session, job_id, sorted(used))
    return stored + len(rows), problems, rejected


# A line's row; the other columns (state pending, no attempts...) take the model's defaults.
_COLUMNS = ("job_id", "custom_id", "line_no", "endpoint", "model", "price_key", "body", "est_tokens")


def _row(job_id: int, line: ParsedLine) -> tuple[Any, ...]:
    family, body = line.family, line.body
    return (
        job_id,
        line.custom_id,
        line.line_no,
        line.endpoint.path,
        line.model,
        family.price_key(line.model, body),
        line.body_json.decode(),
        family.reservation_tokens(body),
    )


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
