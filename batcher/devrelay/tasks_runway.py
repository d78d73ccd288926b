"""The stand-in relay's Runway routes, both shapes commercial relays serve (``relay-task-apis.md`` §5).

- Official: ``POST /runwayml/v1/image_to_video`` (``promptImage`` required, an https URL or a
  ``data:`` URI; ``model`` ``gen3a_turbo`` | ``gen4_turbo``, default ``gen3a_turbo``;
  ``duration`` 5 | 10, default 5) pre-charges ``runwayml_<model>_<duration>`` and answers
  ``{"id"}``; ``GET /runwayml/v1/tasks/{id}`` the task: ``PENDING`` → ``THROTTLED`` →
  ``RUNNING`` (``progress`` 0..1) → ``SUCCEEDED``
  (``output``: ``runway-<id>.mp4``) | ``FAILED`` (``failure``, ``failureCode``). With the
  ``cometapi`` fault the submit adds ``"status": "PENDING"`` and a poll answers CometAPI's way:
  new-api's TaskDto in the success envelope (``action: "IMAGE_TO_VIDEO"``, ``data`` the task
  object), and ``task_not_exist`` until the relay first polled its upstream.
- Reverse: ``POST /runway/tasks`` (``taskType`` ``gen2`` | ``gen3a`` | ``gen3a_turbo`` |
  ``europa``, ``options{text_prompt | init_image, seconds 5 | 10}``) pre-charges ``runway_gen2``
  or ``runway_gen3[_turbo]_<seconds>`` and answers ``{"task": {…}}``; ``GET /runway/tasks/{id}``
  the same object (``status``, ``progressRatio``, ``artifacts[].url``, ``error``).

Errors are new-api's task errors (``tasks_dto``); billing and faults as every task route's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batcher.devrelay.tasks_billing import TASK_PRICES
from batcher.devrelay.tasks_dto import not_found, precharge, success, task_dto, task_error
from batcher.devrelay.tasks_files import file_url
from batcher.devrelay.tasks_gate import Reply, Route, TaskCall
from batcher.devrelay.tasks_table import Family, Phase, Stage, Task

RUNWAY_FAIL_REASON = "An unexpected error occurred during generation"
FAILURE_CODE = "INTERNAL.BAD_OUTPUT.CODE01"
OFFICIAL_STATUS = {Phase.QUEUED: "THROTTLED", Phase.RUNNING: "RUNNING", Phase.SUCCEEDED: "SUCCEEDED",
                   Phase.FAILED: "FAILED"}  # fmt: skip
REVERSE_KINDS = {"gen2": "gen2", "gen3a": "gen3", "europa": "gen3", "gen3a_turbo": "gen3_turbo"}


def _seconds(value: Any) -> int | None:
    return 5 if value in (None, "") else int(value) if str(value) in ("5", "10") else None


def _charge(call: TaskCall, model: str, action: str, *, official: bool) -> Task | Reply:
    if model not in TASK_PRICES:
        return task_error("model_price_error", f"model {model!r} has no price here")
    banned = task_error("task_failed", "Your prompt was flagged by our content moderation")
    task = precharge(
        call, Family.RUNWAY, action, model, banned=lambda: banned, fail_reason=RUNWAY_FAIL_REASON
    )
    if isinstance(task, Reply):
        return task
    task.extra |= {"cometapi": call.fault == "cometapi", "official": official}
    return task


def _image(value: Any) -> bool:
    """An image Runway takes: an http(s) URL or a ``data:`` URI (never a client's file reference)."""
    return isinstance(value, str) and value.startswith(("https://", "http://", "data:image/"))


def image_to_video(call: TaskCall) -> Reply:
    body = call.body
    if not _image(body.get("promptImage")):
        return task_error("invalid_request", "promptImage must be an https URL or a data URI")
    seconds = _seconds(body.get("duration"))
    if seconds is None:
        return task_error("invalid_request", "duration must be 5 or 10")
    task = _charge(
        call, f"runwayml_{body.get('model') or 'gen3a_turbo'}_{seconds}", "IMAGE_TO_VIDEO", official=True
    )
    if isinstance(task, Reply):
        return task
    return Reply({"id": task.id, "status": "PENDING"} if task.extra["cometapi"] else {"id": task.id})


def reverse_submit(call: TaskCall) -> Reply:
    body, options = call.body, call.body.get("options")
    kind = REVERSE_KINDS.get(str(body.get("taskType")))
    if kind is None or not isinstance(options, dict):
        return task_error(
            "invalid_request", "taskType (gen2, gen3a, gen3a_turbo, europa) and options are required"
        )
    if not (str(options.get("text_prompt") or "").strip() or options.get("init_image")):
        return task_error("invalid_request", "options.text_prompt or options.init_image is required")
    if options.get("init_image") and not _image(options["init_image"]):
        return task_error("invalid_request", "options.init_image must be an https URL or a data URI")
    seconds = _seconds(options.get("seconds"))
    if seconds is None:
        return task_error("invalid_request", "options.seconds must be 5 or 10")
    task = _charge(
        call,
        "runway_gen2" if kind == "gen2" else f"runway_{kind}_{seconds}",
        str(body["taskType"]),
        official=False,
    )
    return (
        task
        if isinstance(task, Reply)
        else Reply({"task": reverse_task(call, task, Stage(Phase.WAITING, 0))})
    )


def _mine(call: TaskCall) -> Task | None:
    task = call.table.find(call.match.get("id"), call.owner)
    return task if task is not None and task.family is Family.RUNWAY else None


def _url(call: TaskCall, task: Task) -> str:
    return file_url(call.files_origin, task.file_prefix, f"runway-{task.id}.mp4")


def _when(task: Task) -> str:
    return (
        datetime.fromtimestamp(task.submitted, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def official_task(call: TaskCall, task: Task, stage: Stage) -> dict[str, Any]:
    """The official API's task object at ``stage``."""
    out: dict[str, Any] = {"id": task.id, "status": OFFICIAL_STATUS.get(stage.phase, "PENDING"),
                           "createdAt": _when(task)}  # fmt: skip
    if stage.phase is Phase.RUNNING:
        out["progress"] = round(stage.progress / 100, 3)
    if stage.phase is Phase.SUCCEEDED:
        out["output"] = [_url(call, task)]
    if stage.phase is Phase.FAILED:
        out |= {"failure": task.fail_reason, "failureCode": FAILURE_CODE}
    return out


def fetch_official(call: TaskCall) -> Reply:
    task = _mine(call)
    if task is None or not task.extra.get("official"):
        return not_found()
    stage = call.table.stage(task)
    if not task.extra.get("cometapi"):
        return Reply(official_task(call, task, stage))
    if stage.phase is Phase.WAITING:  # CometAPI: not known yet until its first upstream poll
        return not_found()
    return success(
        task_dto(call, task, stage, platform="runway", result_url="", data=official_task(call, task, stage))
    )


def reverse_task(call: TaskCall, task: Task, stage: Stage) -> dict[str, Any]:
    """The web app's task object at ``stage``."""
    options = task.body.get("options") or {}
    done, failed, running = (stage.phase is p for p in (Phase.SUCCEEDED, Phase.FAILED, Phase.RUNNING))
    status = "RUNNING" if running else "SUCCEEDED" if done else "FAILED" if failed else "PENDING"
    artifact = {"id": task.id[:8], "url": _url(call, task), "filename": f"runway-{task.id}.mp4"}
    return {
        "id": task.id, "name": str(options.get("name") or f"runway-{task.row}"), "image": None,
        "createdAt": _when(task), "updatedAt": _when(task), "taskType": task.action, "options": options,
        "status": status, "error": {"message": task.fail_reason} if failed else None, "progressText": None,
        "progressRatio": str(stage.progress / 100) if running else None,
        "estimatedTimeToStartSeconds": 0 if stage.phase is not Phase.WAITING else 12,
        "artifacts": [artifact] if done else [],
    }  # fmt: skip


def fetch_reverse(call: TaskCall) -> Reply:
    task = _mine(call)
    if task is None or task.extra.get("official"):
        return not_found()
    return Reply({"task": reverse_task(call, task, call.table.stage(task))})


def runway_routes() -> list[Route]:
    return [
        Route("POST", "/runwayml/v1/image_to_video", image_to_video),
        Route("GET", "/runwayml/v1/tasks/{id}", fetch_official),
        Route("POST", "/runway/tasks", reverse_submit),
        Route("GET", "/runway/tasks/{id}", fetch_reverse),
    ]
