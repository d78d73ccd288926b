"""What a task family is: a route whose call starts a relay task that is polled until it ends.

Midjourney, Suno and video routes do not answer with the result: the submit answers with a task
id, and the result comes from later polls. A ``TaskFamily`` is a ``Family`` (the reader, the
estimator and the exports find it the same way) that also knows its half of the task lifecycle
(``workers.taskengine`` runs it):

- ``read_submit``: the submit answer as a ``Submitted`` (the relay's task id, a refusal, "later");
- ``poll_call`` / ``read_poll``: how tasks are polled (a batch of ids, or one) and what a task
  object says (``TaskView``: phase, progress, result URLs, buttons, fail reason);
  and, for a TaskDto that succeeded, the relay's final charge (``quota``);
- ``task_model``: new-api's model name of a line, what it is priced by (``mj_imagine``, …);
- ``follow_up``: the submit of a line that names another line as its origin (``"after"``), once
  the origin succeeded (Midjourney presses a button of it, Luma extends its video).

Relays differ by version (``shared/apis/relay-task-apis.md``); a family reads every form it
documents and never raises for an answer's shape: what it cannot read is a ``TaskView`` that is
still waiting, or a ``Submitted`` refusal with the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, Family

HOUR = 3600.0
# Follow-up fields of a line's body: batcher's own, never sent.
AFTER, BUTTON = "after", "button"


class Phase(StrEnum):
    """Where a relay says a task is, in batcher's words."""

    WAITING = "waiting"  # not started (``""``, NOT_START, SUBMITTED, QUEUED)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MODAL = "modal"  # Midjourney waits for ``/mj/submit/modal``


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit answer: the task id, or why there is none (``later``: try again after a while)."""

    task_id: str | None
    refusal: str | None = None
    later: bool = False
    modal: bool = False  # Midjourney code 21 kept for Inpaint / CustomZoom: the modal step is next


@dataclass(frozen=True, slots=True)
class Button:
    """A Midjourney button of a finished task: its label (``U2``) and ``customId``."""

    label: str
    custom_id: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """What one poll says of one task."""

    task_id: str
    phase: Phase
    progress: str | None = None
    relay_status: str | None = None
    urls: tuple[str, ...] = ()
    fail_reason: str | None = None
    buttons: tuple[Button, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)
    quota: int | None = None  # the relay's charge of a succeeded task as its answer shows it (quota)


@dataclass(frozen=True, slots=True)
class SubmitCall:
    """A submit to send: the route and the body."""

    endpoint: Endpoint
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What a follow-up line takes from its succeeded origin: its task, and the pressed button's customId."""

    task_id: str
    custom_id: str | None = None


@dataclass(frozen=True, slots=True)
class PollCall:
    """One poll: a GET of ``endpoint`` or a POST of ``body`` to it."""

    endpoint: Endpoint
    body: bytes | None = None


class TaskFamily(Family):
    """A family of task routes; see the module docstring. Subclasses set ``name`` and the rest."""

    billed_in: ClassVar[str] = "tasks"
    route: ClassVar[re.Pattern[str] | None] = None  # its routes as a pattern, when not ``paths``
    poll_batch: ClassVar[int] = 1  # task ids one poll may ask for
    deadline_s: ClassVar[float] = 24 * HOUR  # the relay fails a task still going after this

    def accepts(self, path: str) -> bool:
        return self.route.match(path) is not None if self.route is not None else super().accepts(path)

    def repeatable(self, body: Body) -> bool | None:
        return None  # a task's result is files and a relay's task, made again at each submit

    def expected_usage(self, body: Body, *, default: int | None = None) -> Usage:
        """One task: one per-call charge, or the relay's other ratios (``calls``)."""
        return Usage(calls=self.calls(body))

    def calls(self, body: Body) -> Decimal:
        """The per-call charges a task of this body stands for (1; a video's seconds × size)."""
        return Decimal(1)

    def line_model(self, path: str, body: Body) -> str | None:
        """new-api's model name for a line (``mj_imagine``, ``suno_music``); None: the body's."""
        return self.path_model(path)

    def submit_body(self, body: Body) -> dict[str, Any]:
        """The body to send: the line's, without batcher's own fields."""
        return {k: v for k, v in body.items() if k not in (AFTER, BUTTON, "modal")}

    def follow_up(self, call: SubmitCall, follow: FollowUp) -> SubmitCall:
        """The submit of a follow-up line once its origin succeeded (families that take ``after``)."""
        raise NotImplementedError(f"{self.name} lines do not follow other lines")

    def read_submit(self, status: int, content: bytes) -> Submitted:
        """A submit answer (any HTTP status) as a ``Submitted``."""
        raise NotImplementedError

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        """The poll of these task ids (at most ``poll_batch``) of lines of route ``path``."""
        raise NotImplementedError

    def read_poll(self, content: bytes) -> list[TaskView]:
        """The tasks a 2xx poll answer describes (ids it does not name are still unknown)."""
        raise NotImplementedError

    def answer_text(self, answer: Body) -> str | None:
        """What a text export shows of a task: its local files, else its URLs, else its text."""
        shown = answer.get("files") or answer.get("urls")
        if isinstance(shown, list) and shown:
            return " ".join(str(x) for x in shown)
        task = answer.get("task")
        if isinstance(task, dict):
            props, data = task.get("properties"), task.get("data")
            text = (props or {}).get("finalPrompt") if isinstance(props, dict) else None
            text = text or ((data or {}).get("text") if isinstance(data, dict) else None)
            return text_of(text)
        return None

    def poll_gone(self, status: int, content: bytes) -> bool:
        """Whether a refused poll says the task does not exist (``task_no_found``, ``task_not_exist``)."""
        return status == 400 and (b"not_exist" in content or b"no_found" in content)


def one_view(view: TaskView | None) -> list[TaskView]:
    """A poll's list of views when it describes one task (none when it could not be read)."""
    return [view] if view is not None else []


def dto_view(dto: Any) -> TaskView | None:
    """new-api's ``TaskDto`` (Suno and video fetches) as a view; None when it is no task object."""
    if not isinstance(dto, dict):
        return None
    task_id = text_of(dto.get("task_id")) or text_of(dto.get("id"))
    if task_id is None:
        return None
    status = (text_of(dto.get("status")) or "").upper()
    reason = text_of(dto.get("fail_reason")) or text_of(_error_message(dto.get("error")))
    phase = DTO_PHASES.get(status, Phase.WAITING)
    urls = [u for u in (text_of(dto.get("result_url")), text_of(dto.get("url"))) if u]
    if phase is Phase.SUCCEEDED and not urls and reason and reason.startswith("http"):
        urls, reason = [reason], None  # new-api before 2025-10 kept the URL in fail_reason
    if reason and phase is not Phase.SUCCEEDED:
        phase = Phase.FAILED  # new-api: a fail_reason makes a task failed
    urls += data_urls(dto.get("data"))
    progress = text_of(dto.get("progress"))
    quota = final_quota(dto.get("quota")) if phase is Phase.SUCCEEDED else None
    shown = tuple(dict.fromkeys(urls))
    return TaskView(task_id, phase, progress, status or None, shown, reason, raw=dto, quota=quota)


def final_quota(value: Any) -> int | None:
    """A TaskDto's ``quota`` (an int, or a numeric string) as the relay's final charge of a task.

    new-api keeps there what the task costs now: the pre-charge, re-priced on success (Kling's
    units, an adaptor's adjustment), 0 once refunded. Older rows have none; 0 or less is none
    either (a relay that does not bill on the row), and the price table prices the task.
    """
    amount = number(value)
    if amount is None or amount <= 0 or amount != amount.to_integral_value():
        return None
    return int(amount)


DTO_PHASES = {
    "NOT_START": Phase.WAITING,
    "SUBMITTED": Phase.WAITING,
    "QUEUED": Phase.WAITING,
    "PENDING": Phase.WAITING,
    "IN_PROGRESS": Phase.RUNNING,
    "PROCESSING": Phase.RUNNING,
    "RUNNING": Phase.RUNNING,
    "SUCCESS": Phase.SUCCEEDED,
    "SUCCEEDED": Phase.SUCCEEDED,
    "COMPLETED": Phase.SUCCEEDED,
    "FAILURE": Phase.FAILED,
    "FAILED": Phase.FAILED,
    "CANCELLED": Phase.FAILED,
    "UNKNOWN": Phase.FAILED,
}
_URL_KEYS = ("audio_url", "video_url", "image_url", "image_large_url", "url")


def data_urls(data: Any) -> list[str]:
    """The result URLs in a TaskDto's ``data``: Suno clips (a list) or one object."""
    items = data if isinstance(data, list) else [data]
    return [u for item in items if isinstance(item, dict) for k in _URL_KEYS if (u := text_of(item.get(k)))]


def _error_message(error: Any) -> Any:
    return error.get("message") if isinstance(error, dict) else error


def number(value: Any) -> Decimal | None:
    """A count given as a number or a numeric string ("5"), or None."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def json_or_none(content: bytes) -> Any:
    """The JSON value of an answer, or None when it is not JSON."""
    try:
        return orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return None


def text_of(value: Any) -> str | None:
    """A JSON value as text, or None for null and empty."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def envelope_error(body: Any, status: int) -> str:
    """The message of an error answer in any of the relays' envelopes."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or f"HTTP {status}")
        for key in ("message", "description", "code"):
            if text := text_of(body.get(key)):
                return text.strip()
    return f"HTTP {status}"
