"""Runway video tasks through commercial relays, in both shapes they serve (``relay-task-apis.md`` §5).

- **Official** (``RunwayMLFamily``): ``POST /runwayml/v1/image_to_video`` (``promptImage``
  required: an https URL, a ``data:`` URL or a file path; ``model``, ``promptText``,
  ``duration`` 5|10, ``ratio``, with the ``X-Runway-Version`` header) answers ``{"id"}``; polls
  ``GET /runwayml/v1/tasks/{id}``: ``status`` ``PENDING`` / ``THROTTLED`` → ``RUNNING``
  (``progress`` 0..1) → ``SUCCEEDED`` (``output``: the URLs) | ``FAILED`` / ``CANCELLED``
  (``failure``, ``failureCode``). CometAPI answers the poll in new-api's TaskDto envelope
  instead (``{"code": "success", "data": {"status": "QUEUED", "data": <the object>}}``), and a
  task it has just created may be ``task_not_exist`` for a while: a poll refused is "not yet"
  (the engine polls again), never a failure.
- **Reverse** (``RunwayFamily``, the web app's): ``POST /runway/tasks`` (``taskType``,
  ``options{text_prompt, seconds, init_image, …}``) answers ``{"task": {…}}``; polls
  ``GET /runway/tasks/{id}``, the same object (``status``, ``progressRatio``, ``artifacts[].url``,
  ``error``). ``options.init_image`` may be a file path too.

Prices, by the new-api fork's model names: official ``runwayml_<model>_<duration>``
(``runwayml_gen3a_turbo_10``; ``model`` defaults to ``gen3a_turbo``, ``duration`` to 5);
reverse ``runway_gen2``, else ``runway_<taskType>_<seconds>`` with ``gen3a`` (and its codename
``europa``) written ``gen3``: ``gen3a_turbo`` for 10 s is ``runway_gen3_turbo_10``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from jobs.endpoints import Endpoint
from workers.endpoints.base import Body, BodyError, RequestContent
from workers.endpoints.filefields import IMAGE_EXTENSIONS, MB, FileRule
from workers.endpoints.suno import read_envelope_submit
from workers.endpoints.taskfamily import (
    Phase,
    PollCall,
    Submitted,
    TaskFamily,
    TaskView,
    dto_view,
    envelope_error,
    json_or_none,
    number,
    one_view,
    text_of,
)

OFFICIAL, REVERSE = "/runwayml/v1/image_to_video", "/runway/tasks"
VERSION_HEADER = ("X-Runway-Version", "2024-11-06")
IMAGE = FileRule(IMAGE_EXTENSIONS, 16 * MB, urls=True)
DEFAULT_MODEL, DEFAULT_SECONDS = "gen3a_turbo", 5
PHASES = {
    "PENDING": Phase.WAITING,
    "THROTTLED": Phase.WAITING,
    "QUEUED": Phase.WAITING,
    "RUNNING": Phase.RUNNING,
    "SUCCEEDED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
    "CANCELLED": Phase.FAILED,
    "CANCELED": Phase.FAILED,
}


class RunwayMLFamily(TaskFamily):
    """Runway's official API shape; see the module docstring."""

    name = "runwayml"
    paths: ClassVar[tuple[str, ...]] = (OFFICIAL,)
    file_fields: ClassVar[Mapping[str, FileRule]] = {"promptImage": IMAGE}

    def line_model(self, path: str, body: Body) -> str | None:
        model = body.get("model") or DEFAULT_MODEL
        return f"runwayml_{model}_{_seconds(body.get('duration'))}"

    def check(self, body: Body) -> None:
        if not body.get("promptImage"):
            raise BodyError(
                'a Runway image_to_video body needs "promptImage" (an https URL, a data: URL or a file)'
            )
        _check_seconds(body.get("duration"), "duration")

    def request(self, content: bytes) -> RequestContent:
        return RequestContent(content, headers=(VERSION_HEADER,))

    def read_submit(self, status: int, content: bytes) -> Submitted:
        answer = json_or_none(content)
        if isinstance(answer, dict) and "code" not in answer and (task_id := text_of(answer.get("id"))):
            return Submitted(task_id)
        return _refusal_or_envelope(answer, content, status)

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        return PollCall(Endpoint(f"/runwayml/v1/tasks/{ids[0]}"))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        if isinstance(answer, dict) and isinstance(answer.get("data"), dict) and "code" in answer:
            view = wrapped_view(answer["data"])
        else:
            view = official_view(answer)
        return one_view(view)


class RunwayFamily(TaskFamily):
    """Runway's reverse (web app) shape; see the module docstring."""

    name = "runway"
    paths: ClassVar[tuple[str, ...]] = (REVERSE,)
    file_fields: ClassVar[Mapping[str, FileRule]] = {"options.init_image": IMAGE}

    def line_model(self, path: str, body: Body) -> str | None:
        kind = str(body.get("taskType") or "gen3a").replace("europa", "gen3a").replace("gen3a", "gen3")
        options = body.get("options")
        seconds = options.get("seconds") if isinstance(options, dict) else None
        return "runway_gen2" if kind == "gen2" else f"runway_{kind}_{_seconds(seconds)}"

    def check(self, body: Body) -> None:
        options = body.get("options")
        if not isinstance(body.get("taskType"), str) or not isinstance(options, dict):
            raise BodyError('a Runway task body needs "taskType" (gen2, gen3a, gen3a_turbo…) and "options"')
        if not (str(options.get("text_prompt") or "").strip() or options.get("init_image")):
            raise BodyError('a Runway task\'s "options" need "text_prompt" or "init_image"')
        _check_seconds(options.get("seconds"), "options.seconds")

    def read_submit(self, status: int, content: bytes) -> Submitted:
        answer = json_or_none(content)
        task = answer.get("task") if isinstance(answer, dict) else None
        if isinstance(task, dict) and (task_id := text_of(task.get("id"))):
            return Submitted(task_id)
        return _refusal_or_envelope(answer, content, status)

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        return PollCall(Endpoint(f"{REVERSE}/{ids[0]}"))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        task = answer.get("task") if isinstance(answer, dict) else None
        view = official_view(task)
        return one_view(view)


def _seconds(value: Any) -> int:
    seconds = number(value)
    return int(seconds) if seconds is not None else DEFAULT_SECONDS


def _check_seconds(value: Any, name: str) -> None:
    if value is not None and number(value) not in (5, 10):
        raise BodyError(f'"{name}" must be 5 or 10 (got {value!r})')


def _refusal_or_envelope(answer: Any, content: bytes, status: int) -> Submitted:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):  # Runway's own errors
        return Submitted(None, f"refused: {answer['error']}")
    if isinstance(answer, dict) and "code" in answer:
        return read_envelope_submit(content, status)
    return Submitted(None, f"refused: {envelope_error(answer, status)}")


def official_view(task: Any) -> TaskView | None:
    """A Runway task object (official, or the web app's) as a view; None when it is none."""
    if not isinstance(task, dict) or not (task_id := text_of(task.get("id"))):
        return None
    status = (text_of(task.get("status")) or "").upper()
    phase = PHASES.get(status, Phase.WAITING)
    ratio = number(task.get("progress") if task.get("progress") is not None else task.get("progressRatio"))
    progress = f"{int(ratio * 100)}%" if ratio is not None and ratio <= 1 else None
    reason = _failure(task) if phase is Phase.FAILED else None
    urls = output_urls(task) if phase is Phase.SUCCEEDED else []
    return TaskView(task_id, phase, progress, status or None, tuple(urls), reason, raw=task)


def wrapped_view(dto: dict[str, Any]) -> TaskView | None:
    """CometAPI's TaskDto around a Runway task: its status, and the URLs of the task inside."""
    view = dto_view(dto)
    if view is None:
        return None
    inner = dto.get("data")
    urls = [*view.urls, *(output_urls(inner) if isinstance(inner, dict) else [])]
    reason = view.fail_reason or (
        _failure(inner) if view.phase is Phase.FAILED and isinstance(inner, dict) else None
    )
    return replace(view, urls=tuple(dict.fromkeys(urls)), fail_reason=reason)


def output_urls(task: dict[str, Any]) -> list[str]:
    """The result URLs of a Runway task: ``output`` (official) or ``artifacts[].url`` (web app)."""
    urls = [u for u in task.get("output") or [] if isinstance(u, str) and u]
    artifacts = task.get("artifacts") or []
    return urls + [u for a in artifacts if isinstance(a, dict) and (u := text_of(a.get("url")))]


def _failure(task: dict[str, Any]) -> str | None:
    error = task.get("error")
    text = text_of(task.get("failure")) or (
        text_of(error.get("message")) if isinstance(error, dict) else text_of(error)
    )
    code = text_of(task.get("failureCode"))
    return f"{text} ({code})" if text and code else text or code
