"""Midjourney through a relay (new-api + midjourney-proxy): submit, poll in batches, follow-ups.

Routes hang off the relay's root, optionally behind a mode prefix (``/mj-fast/mj/...``):
``/mj/submit/{imagine,blend,describe,shorten,action,modal,change,simple-change,edits,video}``
and ``/mj/insight-face/swap``. Images (``base64Array``, ``base64``, ``sourceBase64``,
``targetBase64``, ``maskBase64``) may be file paths; they are sent as ``data:`` URLs.

Submit codes (``relay-task-apis.md`` §2.3): 1 and 22 are taken (new-api rewrites 22 to 1), 21
is taken too (an existing task, or kept for Inpaint / CustomZoom: the modal step is next), 23
(queue full) is "later", 24 (banned prompt) and every other code are refusals. Polls are
``POST {prefix}/mj/task/list-by-condition {"ids": [...]}``, a bare array in any order.

A follow-up line names its origin and a button: ``{"after": "cat-1", "button": "U2"}`` on
``/mj/submit/action``; the engine fills in ``taskId`` and the button's ``customId``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from workers.endpoints.base import Body, BodyError
from workers.endpoints.filefields import IMAGE_EXTENSIONS, MB, FileRule
from workers.endpoints.taskfamily import (
    AFTER,
    BUTTON,
    HOUR,
    Button,
    FollowUp,
    Phase,
    PollCall,
    SubmitCall,
    Submitted,
    TaskFamily,
    TaskView,
    json_or_none,
    text_of,
)

_ROUTE = re.compile(
    r"^(?P<prefix>/[\w-]+)?/mj/(?:submit/(?P<action>imagine|blend|describe|shorten|action|modal|change"
    r"|simple-change|edits|video)|insight-face/(?P<swap>swap))$"
)
IMAGE = FileRule(IMAGE_EXTENSIONS, 10 * MB)
IMAGES = FileRule(IMAGE_EXTENSIONS, 10 * MB, many=True)
TAKEN, MODAL_NEXT, IN_QUEUE, QUEUE_FULL, BANNED = 1, 21, 22, 23, 24
PHASES = {
    "": Phase.WAITING,
    "NOT_START": Phase.WAITING,
    "SUBMITTED": Phase.WAITING,
    "IN_PROGRESS": Phase.RUNNING,
    "SUCCESS": Phase.SUCCEEDED,
    "FAILURE": Phase.FAILED,
    "CANCEL": Phase.FAILED,
    "MODAL": Phase.MODAL,
}
# new-api's model names by the action a customId or button label names (§2.5).
_CUSTOM_ACTIONS = (
    ("upsample", "upscale"),
    ("low_variation", "low_variation"),
    ("high_variation", "high_variation"),
    ("variation", "variation"),
    ("pan", "pan"),
    ("reroll", "reroll"),
    ("Outpaint", "zoom"),
    ("CustomZoom", "custom_zoom"),
    ("Inpaint", "inpaint"),
)
_LABELS = {"U": "upscale", "V": "variation", "🔄": "reroll", "R": "reroll"}
_SIMPLE = re.compile(r"^\S+\s+(?P<kind>[UVR])\d?$")


class MidjourneyFamily(TaskFamily):
    """Midjourney task routes; see the module docstring."""

    name = "midjourney"
    route = _ROUTE
    poll_batch: ClassVar[int] = 50
    deadline_s: ClassVar[float] = 1 * HOUR  # new-api fails an MJ task after an hour
    file_fields: ClassVar[Mapping[str, FileRule]] = {
        "base64Array": IMAGES,
        "base64": IMAGE,
        "sourceBase64": IMAGE,
        "targetBase64": IMAGE,
        "maskBase64": IMAGE,
    }

    def route_names(self) -> tuple[str, ...]:
        return ("/mj/submit/{imagine,blend,describe,shorten,action,modal,...}", "/mj/insight-face/swap")

    def path_model(self, path: str) -> str | None:
        match = _ROUTE.match(path)
        if match is None or match["action"] in ("action", "change", "simple-change"):
            return None  # decided by the body (``task_model``)
        return "swap_face" if match["swap"] else f"mj_{match['action']}"

    def line_model(self, path: str, body: Body) -> str | None:
        return self.path_model(path) or f"mj_{_body_action(body)}"

    def check(self, body: Body) -> None:
        if AFTER in body:
            if not isinstance(body[AFTER], str) or not isinstance(body.get(BUTTON), str):
                raise BodyError(
                    f'"{AFTER}" must name the custom_id of the line to follow, with "{BUTTON}" the label '
                    'of the button to press (e.g. "after": "cat-1", "button": "U2")'
                )
        elif BUTTON in body:
            raise BodyError(f'"{BUTTON}" needs "{AFTER}": the custom_id of the line whose button it is')

    def follow_up(self, call: SubmitCall, follow: FollowUp) -> SubmitCall:
        """The line's fields (a modal's mask stays for the modal) with ``taskId`` and ``customId``."""
        body = {k: v for k, v in call.body.items() if k != "maskBase64"}
        return SubmitCall(call.endpoint, body | {"taskId": follow.task_id, "customId": follow.custom_id})

    def read_submit(self, status: int, content: bytes) -> Submitted:
        answer = json_or_none(content)
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            return Submitted(None, f"not a Midjourney submit answer: {content[:200]!r}")
        code, task_id = answer["code"], text_of(answer.get("result"))
        text = (text_of(answer.get("description")) or "").strip()
        if code in (TAKEN, IN_QUEUE, MODAL_NEXT) and task_id:
            modal = code == MODAL_NEXT and (answer.get("properties") or {}).get("status") != "SUCCESS"
            return Submitted(task_id, modal=modal)
        if code == QUEUE_FULL:
            return Submitted(None, f"queue full (code 23): {text}", later=True)
        if code == BANNED:
            word = text_of((answer.get("properties") or {}).get("bannedWord"))
            return Submitted(None, f"banned prompt (code 24): {text}" + (f" (word: {word})" if word else ""))
        return Submitted(None, f"refused (code {code}): {text}")

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        match = _ROUTE.match(path)
        prefix = (match["prefix"] if match else None) or ""
        return PollCall(Endpoint(f"{prefix}/mj/task/list-by-condition"), orjson.dumps({"ids": list(ids)}))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        items = answer if isinstance(answer, list) else [answer]
        return [view for item in items if (view := task_view(item)) is not None]


def task_view(task: Any) -> TaskView | None:
    """An MJ task object (§2.4) as a view; None when it is none."""
    if not isinstance(task, dict) or not (task_id := text_of(task.get("id"))):
        return None
    status = text_of(task.get("status")) or ""
    progress, reason = text_of(task.get("progress")), text_of(task.get("failReason"))
    phase = PHASES.get(status, Phase.WAITING)
    if reason and phase is not Phase.SUCCEEDED:
        phase = Phase.FAILED  # new-api refunds on a fail reason whatever the status
    urls = [u for u in (text_of(task.get("imageUrl")), text_of(task.get("videoUrl"))) if u]
    urls += [u for v in task.get("videoUrls") or [] if isinstance(v, dict) and (u := text_of(v.get("url")))]
    buttons = tuple(
        Button(str(b.get("label") or b.get("emoji") or ""), str(b["customId"]))
        for b in task.get("buttons") or []
        if isinstance(b, dict) and b.get("customId")
    )
    return TaskView(
        task_id, phase, progress, status or None, tuple(dict.fromkeys(urls)), reason, buttons, task
    )


def find_button(buttons: Sequence[Button], wanted: str) -> Button | None:
    """The button a follow-up names: by label (``U2``), emoji (``🔄``) or its customId."""
    return next((b for b in buttons if wanted in (b.label, b.custom_id)), None)


def _body_action(body: Body) -> str:
    """The action of a change / simple-change / action body, as new-api's model names spell it."""
    if isinstance(action := body.get("action"), str) and action:
        return action.lower()
    if isinstance(content := body.get("content"), str) and (m := _SIMPLE.match(content.strip())):
        return _LABELS[m["kind"]]
    custom = body.get("customId")
    if isinstance(custom, str):
        return next((name for key, name in _CUSTOM_ACTIONS if key in custom), "action")
    label = body.get(BUTTON)
    if isinstance(label, str) and label:
        special = _label_action(label)
        return _LABELS.get(label[0], special) if special == "action" else special
    return "action"


def _label_action(label: str) -> str:
    lowered = label.lower()
    for key, name in (("subtle", "low_variation"), ("strong", "high_variation"), ("region", "inpaint"),
                      ("custom zoom", "custom_zoom"), ("zoom", "zoom")):  # fmt: skip
        if key in lowered:
            return name
    return "pan" if label in ("⬅️", "➡️", "⬆️", "⬇️") else "action"
