"""The stand-in relay's video routes: new-api's unified API, its OpenAI-style ``/v1/videos``, Kling's own.

- ``POST /v1/video/generations`` (``prompt`` required, ``model``, ``image``/``images``,
  ``size``, ``duration``/``seconds``) and Kling's ``POST /kling/v1/videos/{text2video|image2video}``
  (``model_name``, ``prompt``, ``duration`` "5"|"10", …) answer new-api's ``OpenAIVideo``
  ``{id, task_id, object: "video", model, status: "queued", progress: 0, created_at}``; fetched at
  ``GET /v1/video/generations/{id}`` and ``GET /kling/v1/videos/{kind}/{id}`` as a TaskDto in the
  success envelope, the video at ``result_url`` once ``SUCCESS`` (in ``fail_reason`` instead with
  the ``legacy_url`` fault, as new-api kept it before 2026), ``data`` the upstream's last poll body
  (Kling's ``task_status``, ``task_result.videos``, ``final_unit_deduction`` once it succeeded).
- A Kling task (a ``kling…`` model on the unified or a Kling route) deducts a unit for each 5 s
  asked; with the ``short_video`` fault its video is half as long, half the units are deducted
  and the task is re-priced on success (``tasks_billing``): its TaskDto ``quota`` shows the final
  charge. A ``/v1/videos`` task is not re-priced here (its OpenAI object shows no quota).
- ``POST /v1/videos`` (JSON or multipart; ``model`` required, ``seconds`` default 4, ``size``)
  answers and ``GET /v1/videos/{id}`` shows an OpenAI video object (``queued`` → ``in_progress``
  → ``completed`` | ``failed``, an int ``progress``, ``error``); ``GET /v1/videos/{id}/content``
  streams the MP4, with the key.

Statuses and progress are new-api's: ``NOT_START`` 0 %, ``SUBMITTED`` 10 %, ``QUEUED`` 20 %,
``IN_PROGRESS`` 30 %, then 100 %. Unknown or another key's id: 400 ``task_not_exist``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from batcher.devrelay.tasks_billing import TASK_PRICES, quota_of, video_ratios
from batcher.devrelay.tasks_dto import not_found, precharge, success, task_dto, task_error
from batcher.devrelay.tasks_files import content_type, file_bytes, file_url
from batcher.devrelay.tasks_gate import Reply, Route, TaskCall
from batcher.devrelay.tasks_table import Family, Phase, Stage, Task

NOT_VIDEO = ("mj_", "suno_", "swap", "luma_", "runway")  # priced names of the other task routes
VIDEO_FAIL_REASON = "Failure to pass the risk control system"
PROGRESS = {Phase.WAITING: 0, Phase.SUBMITTED: 10, Phase.QUEUED: 20, Phase.RUNNING: 30}
OPENAI_STATUS = {
    Phase.WAITING: "queued",
    Phase.SUBMITTED: "queued",
    Phase.QUEUED: "queued",
    Phase.RUNNING: "in_progress",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
}
KLING_STATUS = {
    Phase.SUBMITTED: "submitted",
    Phase.QUEUED: "submitted",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "succeed",
    Phase.FAILED: "failed",
}
KLING_UNIT_SECONDS = Decimal(5)  # Kling deducts a unit for each 5 s of video
SORA_SIZES = {
    "sora-2": ("720x1280", "1280x720"),
    "sora-2-pro": ("720x1280", "1280x720", "1792x1024", "1024x1792"),
}


def _banned() -> Reply:
    return task_error("task_failed", VIDEO_FAIL_REASON)


def _seconds_refusal(value: Any) -> Reply | None:
    if value in (None, ""):
        return None
    try:
        ok = 0 <= float(value) <= 3600
    except (TypeError, ValueError):
        ok = False
    return None if ok else task_error("invalid_request", "invalid_seconds")


def _submit(
    call: TaskCall, *, model: Any, action: str, seconds: Any, default_seconds: int, route: str
) -> Reply:
    if not isinstance(model, str) or model not in TASK_PRICES or model.startswith(NOT_VIDEO):
        known = ", ".join(m for m in TASK_PRICES if not m.startswith(NOT_VIDEO))
        return task_error("model_price_error", f"model {model!r} has no price here (priced: {known})")
    refused = _seconds_refusal(seconds)
    if refused is not None:
        return refused
    ratios = video_ratios(seconds, call.body.get("size"), default_seconds=default_seconds)
    task = precharge(
        call, Family.VIDEO, action, model, ratios=ratios, banned=_banned, fail_reason=VIDEO_FAIL_REASON
    )
    if isinstance(task, Reply):
        return task
    task.extra |= {
        "route": route,
        "seconds": format(ratios["seconds"].normalize(), "f"),
        "size": call.body.get("size"),
    }
    if model.startswith("kling") and route != "openai":
        _kling_units(call, task, ratios)
    video = openai_video(call, task, Stage(Phase.WAITING, 0))
    header = orjson.dumps({k: float(v) for k, v in ratios.items()}).decode()
    return Reply(video, headers={"X-New-Api-Other-Ratios": header})


def _kling_units(call: TaskCall, task: Task, ratios: dict[str, Decimal]) -> None:
    """The units Kling will deduct, and the re-priced charge of a video shorter than asked."""
    short = call.fault == "short_video"
    seconds = ratios["seconds"] / 2 if short else ratios["seconds"]
    task.extra |= {"units": _plain(seconds / KLING_UNIT_SECONDS), "made_seconds": _plain(seconds)}
    if short and task.model not in call.config.task_price_patches:  # per-call billing: no settlement
        task.final_quota = quota_of(task.model, ratios | {"seconds": seconds})


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _action(body: dict[str, Any]) -> str:
    return (
        "generate"
        if body.get("image") or body.get("images") or body.get("input_reference")
        else "textGenerate"
    )


def unified(call: TaskCall) -> Reply:
    body = call.body
    if not str(body.get("prompt") or "").strip():
        return task_error("invalid_request", "prompt is required")
    seconds = body.get("seconds") if body.get("seconds") not in (None, "") else body.get("duration")
    return _submit(
        call,
        model=body.get("model"),
        action=_action(body),
        seconds=seconds,
        default_seconds=5,
        route="unified",
    )


def kling(call: TaskCall) -> Reply:
    body, kind = call.body, call.match.get("kind", "text2video")
    if not str(body.get("prompt") or "").strip() and kind == "text2video":
        return task_error("invalid_request", "prompt is required")
    if kind == "image2video" and not body.get("image"):
        return task_error("task_failed", "image is required")
    model = body.get("model_name") or body.get("model") or "kling-v1"
    action = "generate" if kind == "image2video" else "textGenerate"
    return _submit(
        call, model=model, action=action, seconds=body.get("duration"), default_seconds=5, route=kind
    )


def openai_submit(call: TaskCall) -> Reply:
    body = call.body
    model = body.get("model")
    if not model:
        return task_error("missing_model", "model is required")
    size = body.get("size")
    if size and model in SORA_SIZES and size not in SORA_SIZES[model]:
        return task_error("invalid_request", f"size must be one of {', '.join(SORA_SIZES[model])}")
    return _submit(
        call,
        model=model,
        action=_action(body),
        seconds=body.get("seconds"),
        default_seconds=4,
        route="openai",
    )


def video_name(task: Task) -> str:
    return f"video-{task.id}.mp4"


def _url(call: TaskCall, task: Task) -> str:
    return file_url(call.files_origin, task.file_prefix, video_name(task))


def _progress(stage: Stage) -> int:
    if stage.phase is Phase.RUNNING:  # new-api: 30 %, or the adaptor's progress
        return max(PROGRESS[Phase.RUNNING], stage.progress)
    return PROGRESS.get(stage.phase, stage.progress)


def openai_video(call: TaskCall, task: Task, stage: Stage) -> dict[str, Any]:
    """new-api's ``OpenAIVideo`` of the task (Kling tasks carry their URL in ``metadata.url``)."""
    video: dict[str, Any] = {
        "id": task.id,
        "task_id": task.id,
        "object": "video",
        "model": task.model,
        "status": OPENAI_STATUS.get(stage.phase, "queued"),
        "progress": _progress(stage),
        "created_at": int(task.submitted),
        "seconds": task.extra.get("seconds"),
        "size": task.extra.get("size") or "1280x720",
    }
    if stage.progress == 100:
        video |= {"completed_at": int(task.submitted) + 2, "expires_at": int(task.submitted) + 86400}
    if stage.phase is Phase.FAILED:
        video["error"] = {"message": task.fail_reason, "code": "task_failed"}
    if stage.phase is Phase.SUCCEEDED and task.extra.get("route") != "openai":
        video["metadata"] = {"url": _url(call, task)}
    return video


def _upstream(call: TaskCall, task: Task, stage: Stage) -> Any:
    """The upstream's last poll body, Kling's shape (``null`` before the relay's first poll)."""
    if stage.phase is Phase.WAITING:
        return None
    made = task.extra.get("made_seconds") or task.extra.get("seconds")
    video = {"id": task.id[-12:], "url": _url(call, task), "duration": made}
    data = {
        "task_id": task.id,
        "task_status": KLING_STATUS.get(stage.phase, "submitted"),
        "task_status_msg": task.fail_reason if stage.phase is Phase.FAILED else "",
        "created_at": int(task.submitted * 1000),
        "updated_at": int(task.submitted * 1000) + 1000,
    }
    if stage.phase is Phase.SUCCEEDED:
        data["task_result"] = {"videos": [video]}
        if "units" in task.extra:
            data["final_unit_deduction"] = task.extra["units"]
    return {"code": 0, "message": "SUCCEED", "request_id": f"req-{task.row}", "data": data}


def _mine(call: TaskCall) -> Task | None:
    task = call.table.find(call.match.get("id"), call.owner)
    return task if task is not None and task.family is Family.VIDEO else None


def fetch_dto(call: TaskCall) -> Reply:
    task = _mine(call)
    if task is None:
        return not_found()
    stage = call.table.stage(task)
    shown = Stage(stage.phase, _progress(stage))
    return success(
        task_dto(
            call, task, shown, platform="50", result_url=_url(call, task), data=_upstream(call, task, stage)
        )
    )


def fetch_openai(call: TaskCall) -> Reply:
    task = _mine(call)
    return not_found() if task is None else Reply(openai_video(call, task, call.table.stage(task)))


def content(call: TaskCall) -> Reply:
    """The video itself, with the key (a task still running: ``invalid_request``)."""
    task = _mine(call)
    if task is None:
        return not_found()
    if call.table.stage(task).phase is not Phase.SUCCEEDED:
        return task_error("invalid_request", "the video is not ready: its task has not completed")
    name = task.file_prefix.replace("slow-", "missing-") + video_name(task)  # no hang on the API origin
    data = file_bytes(name)
    if data is None:
        return task_error("fail_to_fetch_task", "the video could not be fetched from the upstream", 404)
    return Reply(data, content_type=content_type(name))


def video_routes() -> list[Route]:
    kind = "{kind:text2video|image2video}"
    return [
        Route("POST", "/v1/video/generations", unified),
        Route("GET", "/v1/video/generations/{id}", fetch_dto),
        Route("POST", "/v1/videos", openai_submit),
        Route("GET", "/v1/videos/{id}", fetch_openai),
        Route("GET", "/v1/videos/{id}/content", content),
        Route("POST", f"/kling/v1/videos/{kind}", kling),
        Route("GET", f"/kling/v1/videos/{kind}/{{id}}", fetch_dto),
    ]
