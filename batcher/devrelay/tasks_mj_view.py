"""How the stand-in relay shows a Midjourney task: new-api's task object, its buttons, customId parsing.

The task object is new-api's ``MidjourneyDto`` with its exact JSON names; ``customId``,
``botType`` and ``maskBase64`` are always ``""`` (new-api never fills them); ``buttons``,
``videoUrls`` and ``properties`` are ``null`` until the upstream reports them; times are epoch
milliseconds; ``progress`` is ``"NN%"``, forced to ``"100%"`` on failure.

Buttons follow the plus API (TAI ``CustomComponentModel``): a grid (imagine, variation, reroll,
blend, pan, zoom, inpaint) offers U1–U4, 🔄 and V1–V4; an upscale offers Vary (Strong/Subtle/
Region), the zooms, Custom Zoom and the pans. Their hash is derived from the task id.
"""

from __future__ import annotations

import hashlib
from typing import Any

from batcher.devrelay.tasks_files import file_url
from batcher.devrelay.tasks_table import Phase, Stage, Task

GRID_ACTIONS = frozenset(
    {"IMAGINE", "VARIATION", "LOW_VARIATION", "HIGH_VARIATION", "REROLL", "BLEND", "PAN", "ZOOM"}
    | {"CUSTOM_ZOOM", "INPAINT"}
)
IMAGE_ACTIONS = GRID_ACTIONS | {"UPSCALE", "SWAP_FACE", "DESCRIBE", "EDITS"}
MODAL_ACTIONS = frozenset({"INPAINT", "CUSTOM_ZOOM"})  # code 21 kept: /mj/submit/modal comes next
STATUS = {
    Phase.WAITING: "",
    Phase.MODAL: "MODAL",
    Phase.SUBMITTED: "SUBMITTED",
    Phase.QUEUED: "SUBMITTED",
    Phase.RUNNING: "IN_PROGRESS",
    Phase.SUCCEEDED: "SUCCESS",
    Phase.FAILED: "FAILURE",
}


def button_hash(task_id: str) -> str:
    """The message hash a task's buttons carry (uuid-shaped, from the task id)."""
    h = hashlib.sha256(task_id.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _button(custom_id: str, label: str = "", emoji: str = "") -> dict[str, Any]:
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": 2}


def buttons_of(task: Task) -> list[dict[str, Any]]:
    """The buttons a finished task offers (none for describe, shorten, swap face, upload)."""
    h = button_hash(task.id)
    if task.action in GRID_ACTIONS:
        ups = [_button(f"MJ::JOB::upsample::{i}::{h}", f"U{i}") for i in range(1, 5)]
        vs = [_button(f"MJ::JOB::variation::{i}::{h}", f"V{i}") for i in range(1, 5)]
        return [*ups, _button(f"MJ::JOB::reroll::0::{h}::SOLO", emoji="🔄"), *vs]
    if task.action != "UPSCALE":
        return []
    pans = [("pan_left", "⬅️"), ("pan_right", "➡️"), ("pan_up", "⬆️"), ("pan_down", "⬇️")]
    return [
        _button(f"MJ::JOB::high_variation::1::{h}::SOLO", "Vary (Strong)", "🪄"),
        _button(f"MJ::JOB::low_variation::1::{h}::SOLO", "Vary (Subtle)", "🪄"),
        _button(f"MJ::Inpaint::1::{h}::SOLO", "Vary (Region)", "🖌️"),
        _button(f"MJ::Outpaint::50::1::{h}::SOLO", "Zoom Out 2x", "🔍"),
        _button(f"MJ::Outpaint::75::1::{h}::SOLO", "Zoom Out 1.5x", "🔍"),
        _button(f"MJ::CustomZoom::1::{h}", "Custom Zoom", "🔍"),
        *[_button(f"MJ::JOB::{pan}::1::{h}::SOLO", emoji=arrow) for pan, arrow in pans],
    ]


class UnknownAction(ValueError):
    """Raised for a customId new-api cannot map to an action (``unknown_action:<customId>``)."""


def action_of(custom_id: str) -> tuple[str, int]:
    """new-api's ``CoverPlusActionToNormalAction``: the action a customId names, and its index."""
    parts = custom_id.split("::")
    if len(parts) < 2:
        raise UnknownAction(f"unknown_action:{custom_id}")
    act = parts[2] if parts[1] == "JOB" and len(parts) > 2 else parts[1]
    exact = {"variation": "VARIATION", "low_variation": "LOW_VARIATION", "high_variation": "HIGH_VARIATION",
             "Outpaint": "ZOOM", "CustomZoom": "CUSTOM_ZOOM", "Inpaint": "INPAINT"}  # fmt: skip
    if "upsample" in act:
        return "UPSCALE", _index(parts, custom_id)
    if act in exact:
        return exact[act], _index(parts, custom_id) if act == "variation" else 1
    if "pan" in act:
        return "PAN", 1
    if "reroll" in act:
        return "REROLL", 0
    raise UnknownAction(f"unknown_action:{custom_id}")


def _index(parts: list[str], custom_id: str) -> int:
    try:
        return int(parts[3])
    except (IndexError, ValueError):
        raise UnknownAction(f"index_parse_failed:{custom_id}") from None


def image_name(task: Task) -> str:
    return f"mj-{task.id}.png"


def task_object(task: Task, stage: Stage, files_origin: str) -> dict[str, Any]:
    """new-api's ``MidjourneyDto`` of the task at ``stage``."""
    status, done, video = STATUS[stage.phase], stage.phase is Phase.SUCCEEDED, task.action == "VIDEO"
    ms = int(task.submitted * 1000)
    url = file_url(files_origin, task.file_prefix, image_name(task)) if task.action in IMAGE_ACTIONS else ""
    if stage.phase is Phase.RUNNING and url:
        url += f"?rand={stage.progress}"  # new-api's forwarded preview while the task runs
    elif not done:
        url = ""
    return {
        "id": task.id,
        "action": task.action,
        "customId": "",
        "botType": "",
        "prompt": str(task.extra.get("prompt", "")),
        "promptEn": str(task.extra.get("prompt", "")),
        "description": "提交成功",
        "state": str(task.body.get("state") or ""),
        "submitTime": ms,
        "startTime": ms + 1000 if stage.phase not in (Phase.WAITING, Phase.MODAL) else 0,
        "finishTime": int(task.started * 1000) + 2000 if stage.progress == 100 else 0,
        "imageUrl": url,
        "videoUrl": file_url(files_origin, task.file_prefix, f"mj-{task.id}.mp4") if done and video else "",
        "videoUrls": None,
        "status": status,
        "progress": f"{stage.progress}%",
        "failReason": task.fail_reason if stage.phase is Phase.FAILED else "",
        "buttons": buttons_of(task) if done else None,
        "maskBase64": "",
        "properties": _properties(task, done),
    }


def _properties(task: Task, done: bool) -> dict[str, Any] | None:
    if task.action == "DESCRIBE" and done:
        prompts = [f"{n} a deterministic picture {task.id[-4:]} number {i} --ar 5:4"
                   for i, n in enumerate(("1️⃣", "2️⃣", "3️⃣", "4️⃣"), 1)]  # fmt: skip
        return {"finalPrompt": "\n\n".join(prompts), "finalZhPrompt": ""}
    if task.action == "SHORTEN" and done:
        short = " ".join(str(task.body.get("prompt", "")).split()[:3])
        return {"finalPrompt": f"## Important tokens\n{short}\n\n## Shortened prompts\n1️⃣ {short}",
                "finalZhPrompt": ""}  # fmt: skip
    if task.awaiting_modal:
        return {"finalPrompt": str(task.extra.get("prompt", "")), "finalZhPrompt": ""}
    return None
