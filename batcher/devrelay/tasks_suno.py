"""The stand-in relay's Suno routes, as new-api serves them in front of Suno-API.

``POST /suno/submit/{music|lyrics}`` (case-insensitive) answers ``{"code": "success",
"message": "", "data": "task_…"}`` and pre-charges ``suno_music`` / ``suno_lyrics``;
``GET /suno/fetch/{id}`` the TaskDto in the success envelope, ``POST /suno/fetch {"ids": […]}``
a list of them (``[]`` for none). A music task's ``data`` is its two clips (Suno-API's
``SunoSong``: ``audio_url``, ``video_url``, ``image_url``, ``image_large_url`` once ``complete``,
``status`` ``submitted`` → ``queued`` → ``streaming`` → ``complete`` | ``error``, the failure in
``metadata.error_message``); a lyrics task's is ``{id, status, title, text}``. ``data`` is
``null`` until the relay's first poll (``NOT_START``).

Validation as new-api's adaptor: lyrics need a ``prompt`` (400 ``invalid_request``
``prompt_empty``), another action is ``invalid_action``; a continuation naming a clip but no
``task_id`` is the upstream's ``task_id is empty`` (HTTP 500, as new-api relays it).
"""

from __future__ import annotations

import hashlib
from typing import Any

from batcher.devrelay.tasks_dto import not_found, precharge, success, task_dto, task_error
from batcher.devrelay.tasks_files import file_url
from batcher.devrelay.tasks_gate import Reply, Route, TaskCall
from batcher.devrelay.tasks_table import Family, Phase, Stage, Task

SUNO_FAIL_REASON = "Song Description contains artist name"
CLIP_STATUS = {
    Phase.WAITING: "submitted",
    Phase.MODAL: "submitted",
    Phase.SUBMITTED: "submitted",
    Phase.QUEUED: "queued",
    Phase.RUNNING: "streaming",
    Phase.SUCCEEDED: "complete",
    Phase.FAILED: "error",
}
CLIPS = 2
CLIP_SECONDS = 121.4


def clip_id(task_id: str, index: int) -> str:
    """A clip's uuid, from its task id and place."""
    h = hashlib.sha256(f"{task_id}-clip-{index}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def submit(call: TaskCall) -> Reply:
    action = call.match.get("action", "").upper()
    if action not in ("MUSIC", "LYRICS"):
        return task_error("invalid_request", "invalid_action")
    if action == "LYRICS" and not call.body.get("prompt"):
        return task_error("invalid_request", "prompt_empty")
    if call.body.get("continue_clip_id") and not call.body.get("task_id"):
        return task_error("invalid_request", "task_id is empty", 500)
    banned = task_error("internal_error", "prompt contains banned words", 500)
    task = precharge(
        call,
        Family.SUNO,
        action,
        f"suno_{action.lower()}",
        banned=lambda: banned,
        fail_reason=SUNO_FAIL_REASON,
    )
    if isinstance(task, Reply):
        return task
    task.body = task.body | {"mv": task.body.get("mv") or "chirp-v3-0"}
    return success(task.id)


def _clip(call: TaskCall, task: Task, stage: Stage, index: int) -> dict[str, Any]:
    clip, done, failed = clip_id(task.id, index), stage.phase is Phase.SUCCEEDED, stage.phase is Phase.FAILED
    body = task.body

    def url(ext: str, suffix: str = "") -> str:
        return file_url(call.files_origin, task.file_prefix, f"suno-{clip}{suffix}.{ext}") if done else ""

    return {
        "id": clip,
        "video_url": url("mp4"),
        "audio_url": url("mp3"),
        "image_url": url("png"),
        "image_large_url": url("png", "-large"),
        "is_video_pending": not done,
        "major_model_version": "v3",
        "model_name": str(body.get("mv")),
        "status": CLIP_STATUS[stage.phase],
        "title": str(body.get("title") or f"Song {index + 1}"),
        "text": "",
        "created_at": int(task.submitted),
        "metadata": {
            "tags": str(body.get("tags") or ""),
            "prompt": str(body.get("prompt") or ""),
            "gpt_description_prompt": str(body.get("gpt_description_prompt") or ""),
            "audio_prompt_id": None,
            "duration": CLIP_SECONDS + index if done else None,
            "error_type": "moderation_failure" if failed else None,
            "error_message": task.fail_reason if failed else None,
        },
    }


def lyrics_text(task: Task) -> str:
    """The lyrics a lyrics task writes: two verses from its prompt."""
    words = str(task.body.get("prompt", "")).split() or ["la"]
    return f"[Verse]\n{' '.join(words)}\n\n[Chorus]\n{' '.join(reversed(words))}"


def _data(call: TaskCall, task: Task, stage: Stage) -> Any:
    if stage.phase is Phase.WAITING:
        return None
    if task.action == "LYRICS":
        done = stage.phase is Phase.SUCCEEDED
        return {
            "id": clip_id(task.id, 0),
            "status": CLIP_STATUS[stage.phase],
            "title": str(task.body.get("title") or "Lyrics"),
            "text": lyrics_text(task) if done else "",
        }
    return [_clip(call, task, stage, i) for i in range(CLIPS)]


def dto(call: TaskCall, task: Task) -> dict[str, Any]:
    stage = call.table.stage(task)
    return task_dto(call, task, stage, platform="suno", result_url="", data=_data(call, task, stage))


def fetch_one(call: TaskCall) -> Reply:
    task = call.table.find(call.match.get("id"), call.owner)
    return not_found() if task is None or task.family is not Family.SUNO else success(dto(call, task))


def fetch_many(call: TaskCall) -> Reply:
    ids = call.body.get("ids")
    found = [call.table.find(i, call.owner) for i in ids] if isinstance(ids, list) else []
    return success([dto(call, t) for t in found if t is not None and t.family is Family.SUNO])


def suno_routes() -> list[Route]:
    return [
        Route("POST", "/suno/submit/{action}", submit),
        Route("POST", "/suno/fetch", fetch_many),
        Route("GET", "/suno/fetch/{id}", fetch_one),
    ]
