"""Export a job's results: JSONL in the OpenAI Batch output format, CSV or Parquet; streamed in order.

JSONL lines are OpenAI's (``batcher.batch_output``), made a page of lines at a time. A line
answered from the response cache (``workers.cache``) has the same ``response`` as the line that
paid for it, and ``"cached": true`` beside it (CSV and Parquet: a ``cached`` column). With several
providers (``batcher.toml``), CSV and Parquet name the provider and key that answered
(``provider``).

An export only reads, in one snapshot (``Store.reading``): on SQLite it neither waits for a
running job's writes nor takes the write lock they would wait for, however long it takes.

Lines not yet terminal (pending, running) are not exported; the summary counts them. Speech audio
stays where the worker wrote it; the summary says where, and ``audio_note`` says so to the user
(with docker compose, the workers' ``/data/results`` is the host's ``./results``). Every file
appears whole or not at all, gzip- or Zstandard-compressed when its name ends in ``.gz`` or
``.zst`` (``batcher.outfile``).

A CSV text cell that begins with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) would be
run as a formula by a spreadsheet (CSV injection, OWASP): it is written with a leading ``'``.
Numbers stay numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import orjson

from batcher.batch_output import JSONL_COLUMNS, BatchOutput
from batcher.outfile import text_output
from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import BatcherError
from jobs.models import RequestState
from jobs.records import ResultLine
from jobs.store import AudioFiles
from workers.endpoints import family_of

CSV_COLUMNS = (
    "custom_id",
    "line",
    "state",
    "endpoint",
    "model",
    "text",
    "embedding_dim",
    "audio_path",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "characters",
    "usage_estimated",
    "latency_ms",
    "attempts",
    "cached",
    "provider",
    "error_code",
    "error",
)


class ExportFormat(StrEnum):
    """The formats ``batcher export`` writes."""

    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


@dataclass(frozen=True)
class ExportSummary:
    """How many rows went where, and how many lines were not finished."""

    written: int
    errors_written: int
    unfinished: int
    audio: AudioFiles


def export_job(
    store: Store,
    job_id: int,
    out: Path,
    *,
    fmt: ExportFormat = ExportFormat.JSONL,
    errors: Path | None = None,
) -> ExportSummary:
    """Write the job's terminal lines to ``out`` (failed ones to ``errors`` when given)."""
    if fmt == ExportFormat.PARQUET:
        return _parquet(store, job_id, out, errors)
    if fmt == ExportFormat.JSONL:
        return _jsonl(store, job_id, out, errors)
    written = errors_written = unfinished = 0
    with ExitStack() as stack, store.reading() as session:
        q.get_job(session, job_id)
        main = _CsvWriter.open(stack, out)
        side = _CsvWriter.open(stack, errors) if errors else main
        for line in q.iter_results(session, job_id):
            if line.state not in (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED):
                unfinished += 1
                continue
            target = main if line.state == RequestState.SUCCEEDED else side
            target.write(line)
            if target is side and errors:
                errors_written += 1
            else:
                written += 1
        audio = q.audio_files(session, job_id)
    return ExportSummary(written, errors_written, unfinished, audio)


def _jsonl(store: Store, job_id: int, out: Path, errors: Path | None) -> ExportSummary:
    """JSONL a page at a time; with ``errors``, the lines that did not succeed go there."""
    written = errors_written = 0
    output = BatchOutput()
    with ExitStack() as stack, store.reading() as session:
        q.get_job(session, job_id)
        counts = q.state_counts(session, job_id)
        main = stack.enter_context(text_output(out)).buffer
        side = stack.enter_context(text_output(errors)).buffer if errors else None
        for page in q.iter_result_pages(session, job_id, columns=JSONL_COLUMNS, bodies=True):
            lines = output.lines(page)
            if side is None:
                main.write(b"".join(lines))
                written += len(lines)
                continue
            ok = [state == RequestState.SUCCEEDED for state in page.columns["state"]]
            main.write(b"".join(line for line, good in zip(lines, ok, strict=True) if good))
            side.write(b"".join(line for line, good in zip(lines, ok, strict=True) if not good))
            written += sum(ok)
            errors_written += len(lines) - sum(ok)
        audio = q.audio_files(session, job_id)
    return ExportSummary(written, errors_written, counts["pending"] + counts["running"], audio)


def audio_note(audio: AudioFiles) -> str | None:
    """Where the job's audio files are, and what to do when that folder is not on this machine."""
    if not audio.count or audio.folder is None:
        return None
    note = f"{audio.count} audio files are in {audio.folder} (the audio_path of each line)"
    if not Path(audio.folder).is_dir():
        note += (
            f"; {audio.folder} is not on this machine: the worker that ran the job wrote it "
            f"(with docker compose it is ./results/{Path(audio.folder).name} beside docker-compose.yml)"
        )
    return note


def _parquet(store: Store, job_id: int, out: Path, errors: Path | None) -> ExportSummary:
    from batcher.parquet_export import export_parquet

    if errors is not None:
        raise BatcherError(
            "--errors goes with jsonl or csv; a Parquet file keeps failed lines in its `state` column"
        )
    with store.reading() as session:
        counts = q.state_counts(session, job_id)
        audio = q.audio_files(session, job_id)
    written = export_parquet(store, job_id, out)
    return ExportSummary(written, 0, counts["pending"] + counts["running"], audio)


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (see the module doc)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class _CsvWriter:
    def __init__(self, handle: TextIO) -> None:
        self.csv = csv.writer(handle)
        self.csv.writerow(CSV_COLUMNS)

    @classmethod
    def open(cls, stack: ExitStack, path: Path) -> _CsvWriter:
        return cls(stack.enter_context(text_output(path)))

    def write(self, line: ResultLine) -> None:
        self.csv.writerow([csv_safe(v) for v in csv_row(line)])


def csv_row(line: ResultLine) -> list[Any]:
    """One CSV row: the first choice's text or the embedding's dimension, tokens, the error."""
    text, dim = _summary(line)
    return [
        line.custom_id,
        line.line_no,
        line.state,
        line.endpoint,
        line.model,
        text,
        dim,
        line.audio_path or "",
        line.prompt_tokens,
        line.completion_tokens,
        line.total_tokens,
        line.characters,
        int(line.usage_estimated),
        line.latency_ms,
        line.attempts,
        int(line.cached),
        line.provider or "",
        line.error_code or "",
        line.last_error or "",
    ]


def _summary(line: ResultLine) -> tuple[str, int | str]:
    if line.vectors is not None:
        return "", line.vectors.dim
    if line.state != RequestState.SUCCEEDED or not line.response_body:
        return "", ""
    family, body = family_of(Endpoint(line.endpoint)), orjson.loads(line.response_body)
    vectors = family.vectors(body)
    if vectors:
        return "", len(vectors[0])
    return family.answer_text(body) or "", ""


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Read an exported JSONL file back (tests and scripts)."""
    with path.open("rb") as f:
        for raw in f:
            yield orjson.loads(raw)
