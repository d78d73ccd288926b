"""The stand-in relay's Luma routes, as commercial relays serve them (``relay-task-apis.md`` §5).

Under ``/luma/generations``, ``/luma/v1/generations`` and ``/dream-machine/v1/generations``:

- ``POST {base}`` (``user_prompt`` required, or the official ``prompt``) pre-charges
  ``luma_video_api`` and answers the Luma web-app generation object, ``state: "pending"``;
- ``POST {base}/{id}/extend`` (same body) extends a completed generation of the caller's
  (pre-charges ``luma_video_extend_api``; an unknown id is ``task_not_exist``, one not completed
  ``invalid_request``);
- ``GET {base}/{id}``: ``state`` ``pending`` → ``processing`` → ``completed`` | ``failed``
  (``failure_reason``); completed, ``video{url, download_url, width, height, thumbnail}`` (the
  watermarked ``luma-<id>-wm.mp4`` and ``luma-<id>.mp4``), ``thumbnail``, ``last_frame``; with
  the ``luma_artifact`` fault the newer shape, ``request{…}`` and ``artifact{video, thumbnail}``.

Errors are new-api's task errors (``tasks_dto``); billing and faults as every task route's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batcher.devrelay.tasks_dto import not_found, precharge, task_error
from batcher.devrelay.tasks_files import file_url
from batcher.devrelay.tasks_gate import Reply, Route, TaskCall
from batcher.devrelay.tasks_table import Family, Phase, Stage, Task

LUMA_FAIL_REASON = "400: prompt not allowed because advanced moderation failed"
BASES = ("/luma/generations", "/luma/v1/generations", "/dream-machine/v1/generations")
STATES = {Phase.RUNNING: "processing", Phase.SUCCEEDED: "completed", Phase.FAILED: "failed"}
WIDTH, HEIGHT = 1360, 752


def _prompt(body: dict[str, Any]) -> str:
    return str(body.get("user_prompt") or body.get("prompt") or "").strip()


def _create(call: TaskCall, model: str, origin: str = "") -> Reply:
    if not _prompt(call.body):
        return task_error("invalid_request", "user_prompt is required")
    banned = task_error("task_failed", LUMA_FAIL_REASON)
    task = precharge(
        call, Family.LUMA, "extend" if origin else "generate", model, banned=lambda: banned,
        fail_reason=LUMA_FAIL_REASON,
    )  # fmt: skip
    if isinstance(task, Reply):
        return task
    task.origin_id = origin
    task.extra |= {"artifact": call.fault == "luma_artifact"}
    return Reply(generation(call, task, Stage(Phase.WAITING, 0)))


def create(call: TaskCall) -> Reply:
    return _create(call, "luma_video_api")


def extend(call: TaskCall) -> Reply:
    origin = _mine(call)
    if origin is None:
        return not_found()
    if call.table.stage(origin).phase is not Phase.SUCCEEDED:
        return task_error("invalid_request", "the generation to extend has not completed")
    return _create(call, "luma_video_extend_api", origin.id)


def fetch(call: TaskCall) -> Reply:
    task = _mine(call)
    return not_found() if task is None else Reply(generation(call, task, call.table.stage(task)))


def _mine(call: TaskCall) -> Task | None:
    task = call.table.find(call.match.get("id"), call.owner)
    return task if task is not None and task.family is Family.LUMA else None


def video_name(task: Task, suffix: str = "") -> str:
    return f"luma-{task.id}{suffix}.mp4"


def _file(call: TaskCall, task: Task, name: str) -> dict[str, Any]:
    return {"url": file_url(call.files_origin, task.file_prefix, name), "width": WIDTH, "height": HEIGHT}


def generation(call: TaskCall, task: Task, stage: Stage) -> dict[str, Any]:
    """The generation object of ``task`` at ``stage`` (the web app's, or the newer artifact shape)."""
    done = stage.phase is Phase.SUCCEEDED
    created = datetime.fromtimestamp(task.submitted, UTC).isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {
        "id": task.id,
        "prompt": _prompt(task.body),
        "state": STATES.get(stage.phase, "pending"),
        "queue_state": None,
        "created_at": created,
        "batch_id": "",
        "liked": None,
        "estimate_wait_seconds": None if done else 30,
        "failure_reason": task.fail_reason if stage.phase is Phase.FAILED else None,
    }
    video = _file(call, task, video_name(task, "-wm")) | {
        "download_url": file_url(call.files_origin, task.file_prefix, video_name(task))
    }
    frame = _file(call, task, f"luma-{task.id}.png")
    if task.extra.get("artifact"):
        out["request"] = {
            "prompt": out.pop("prompt"),
            "aspect_ratio": task.body.get("aspect_ratio") or "16:9",
        }
        artifact = {"video": video, "thumbnail": frame, "video_raw": None, "last_frame": frame}
        return out | {"artifact": artifact if done else None}
    parts = {"video": video | {"thumbnail": frame["url"]}, "video_raw": _file(call, task, video_name(task)),
             "thumbnail": frame, "last_frame": frame}  # fmt: skip
    return out | {key: value if done else None for key, value in parts.items()}


def luma_routes() -> list[Route]:
    routes: list[Route] = []
    for base in BASES:
        routes += [
            Route("POST", base, create),
            Route("POST", f"{base}/{{id}}/extend", extend),
            Route("GET", f"{base}/{{id}}", fetch),
        ]
    return routes
