"""A task line's terminal result: the stored answer, its files, and the one attempt it bills.

A succeeded task's stored answer (``response_body``) is batcher's own summary, what ``export``
writes: ``task_id``, ``status``, ``progress``, ``urls``, ``files`` (local paths, with
``--download``), ``download_errors`` (URL → why it was not fetched; the URL stays in ``urls``),
``buttons`` (MJ: label → customId, what follow-ups press) and the relay's last ``task`` object.

Each task line has one attempt row per charged submit, written with its terminal result: the
submit, and a Midjourney modal step (``/mj/submit/modal``: new-api charges it again, as
``mj_modal``) as an attempt of its own, outcome ``step``, priced by ``MODAL_PRICE``. A succeeded
task's attempts carry a usage of one call each (priced per call by the line's model, new-api's
names, ``mj_imagine``…, or the step's own); a task the relay failed was refunded and they carry
none; a submit with no answer is an attempt without a status, which the usage report counts as
possibly billed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from jobs.models import ModalState, RequestState
from jobs.records import STEP, AttemptRecord, LineResult, Usage, WorkItem
from jobs.store.jobs import SUBMIT_UNKNOWN
from jobs.store.tasks import MODAL_PRICE, TaskRecord
from workers.downloads import Downloader
from workers.endpoints.taskfamily import TaskView
from workers.resultfiles import write_result_file

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "video/mp4": "mp4",
    "video/webm": "webm",
}


@dataclass(frozen=True, slots=True)
class Saved:
    """What downloading a task's URLs gave: local files and the URLs that could not be fetched."""

    files: list[str]
    errors: dict[str, str]


async def save_files(
    downloader: Downloader, urls: tuple[str, ...], *, folder: Path, request_id: int, root: str
) -> Saved:
    """Fetch each URL into ``folder`` as ``<line id>-<n>.<ext>``; a failure is kept, not raised."""
    files, errors = [], {}
    for n, url in enumerate(urls, 1):
        got = await downloader.fetch(root + url if url.startswith("/") else url)
        if got.content is None:
            errors[url] = got.error or "not fetched"
            continue
        name = f"{request_id}-{n}.{_extension(url, got.content_type)}"
        files.append(str(await asyncio.to_thread(write_result_file, folder, name, got.content)))
    return Saved(files, errors)


def _extension(url: str, content_type: str) -> str:
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind in _EXTENSIONS:
        return _EXTENSIONS[kind]
    suffix = urlsplit(url).path.rpartition(".")[2].lower()
    return suffix if 0 < len(suffix) <= 4 and suffix.isalnum() else "bin"


def summary(view: TaskView, saved: Saved | None) -> dict[str, Any]:
    """The stored answer of a finished task (see the module docstring)."""
    out: dict[str, Any] = {
        "task_id": view.task_id,
        "status": view.relay_status,
        "progress": view.progress,
        "urls": list(view.urls),
    }
    if saved is not None:
        out["files"] = saved.files
        if saved.errors:
            out["download_errors"] = saved.errors
    if view.buttons:
        out["buttons"] = {b.label: b.custom_id for b in view.buttons}
    if view.fail_reason:
        out["fail_reason"] = view.fail_reason
    out["task"] = view.raw
    return out


def succeeded(
    item: WorkItem, body: dict[str, Any], *, submitted_at: float, owner: str, usage: Usage,
    relay_quota: int | None = None,
) -> tuple[AttemptRecord, LineResult]:  # fmt: skip
    """A succeeded task's attempt (one priced call, or costing ``relay_quota``: the relay's final
    charge) and result."""
    attempt = _attempt(item, submitted_at, 200, "ok", "", None, owner=owner, usage=usage)
    attempt.relay_quota = relay_quota
    result = LineResult(
        item.request_id,
        item.job_id,
        RequestState.SUCCEEDED.value,
        status_code=200,
        response_body=orjson.dumps(body).decode(),
        usage=usage,
    )
    return attempt, result


def failed(
    item: WorkItem,
    *,
    code: str,
    message: str,
    submitted_at: float,
    owner: str,
    status: int | None = 200,
    sent: bool = True,
    body: dict[str, Any] | None = None,
) -> tuple[AttemptRecord, LineResult]:
    """A failed line's attempt (no usage: nothing charged, or refunded; no status: unknown) and result."""
    attempt = _attempt(item, submitted_at, status, "error", code, message, owner=owner, usage=None, sent=sent)
    result = LineResult(
        item.request_id,
        item.job_id,
        RequestState.FAILED.value,
        status_code=status,
        response_body=orjson.dumps(body).decode() if body else None,
        error_code=code,
        error_message=message,
    )
    return attempt, result


def _attempt(  # noqa: PLR0917 - an attempt row's columns, in their order
    item: WorkItem,
    submitted_at: float,
    status: int | None,
    outcome: str,
    error_class: str,
    message: str | None,
    *,
    owner: str,
    usage: Usage | None,
    sent: bool = True,
) -> AttemptRecord:
    started = datetime.fromtimestamp(submitted_at, UTC)
    return AttemptRecord(
        item.request_id,
        item.job_id,
        item.attempts + 1,
        started,
        0,
        status,
        outcome,
        error_class,
        message,
        sent=sent,
        usage=usage,
        worker=owner,
    )


def step_attempts(
    item: WorkItem, record: TaskRecord | None, *, owner: str, succeeded: bool, charged: bool
) -> list[AttemptRecord]:
    """The attempt of a task's modal step, if it had one that may have been charged.

    Taken: one call at ``MODAL_PRICE`` when the task succeeded, none when the relay refunded the
    task (``charged`` False). Sent with no answer (still ``submitting``): possibly billed. A step
    put back by ``retry --unknown`` and not sent again was counted by the earlier end.
    """
    if record is None or record.modal not in (ModalState.TAKEN, ModalState.SUBMITTING):
        return []
    at = record.modal_at if record.modal_at is not None else record.submitted_at
    started = datetime.fromtimestamp(at, UTC)
    if record.modal is ModalState.SUBMITTING:
        return [
            AttemptRecord(item.request_id, item.job_id, item.attempts + 2, started, 0, None, "error",
                          SUBMIT_UNKNOWN, "modal step: no answer", worker=owner, price_key=MODAL_PRICE)
        ]  # fmt: skip
    usage = Usage(calls=Decimal(1)) if succeeded else None
    return [
        AttemptRecord(item.request_id, item.job_id, item.attempts + 2, started, 0, 200, STEP, "", None,
                      sent=succeeded or charged, usage=usage, worker=owner, price_key=MODAL_PRICE)
    ]  # fmt: skip
