"""Luma (Dream Machine) video tasks through commercial relays: generate, extend, poll one by one.

No open-source relay has these routes; their shape comes from vendor docs (``relay-task-apis.md``
§5). Routes, under ``/luma/generations``, ``/luma/v1/generations`` or the official
``/dream-machine/v1/generations``:

- ``POST {base}``: a new video (``user_prompt``, or the official API's ``prompt``);
- ``POST {base}/{task_id}/extend``: extends the video of task ``task_id``. Written with the
  placeholder itself, ``{base}/{task_id}/extend`` and ``"after": "<custom_id>"``, it extends the
  video of another line of the same file once that line succeeded (``LumaExtendFamily``).

Both answer the generation object (``{"id", "state": "pending", …}``); a poll is
``GET {base}/{id}``: ``state`` ``pending`` / ``queued`` → ``processing`` / ``dreaming`` →
``completed`` | ``failed``, the video at ``video.download_url`` ‖ ``video.url`` (newer relays:
``artifact.video``, the official API: ``assets.video``), the failure in ``failure_reason``. Some
relays wrap it in new-api's task envelope (``{"code": "success", "data": …}``): read as well.

Priced by the new-api fork's model names: ``luma_video_api`` a generation, ``luma_video_extend_api``
an extension, one call each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from jobs.endpoints import Endpoint
from workers.endpoints.base import Body, BodyError
from workers.endpoints.suno import read_envelope_submit
from workers.endpoints.taskfamily import (
    AFTER,
    BUTTON,
    FollowUp,
    Phase,
    PollCall,
    SubmitCall,
    Submitted,
    TaskFamily,
    TaskView,
    dto_view,
    envelope_error,
    json_or_none,
    one_view,
    text_of,
)

PLACEHOLDER = "{task_id}"
_ROUTE = re.compile(
    r"^(?P<base>/luma/generations|/luma/v1/generations|/dream-machine/v1/generations)"
    r"(?:/(?P<id>[^/]+)/extend)?$"
)
CREATE_MODEL, EXTEND_MODEL = "luma_video_api", "luma_video_extend_api"
PHASES = {
    "pending": Phase.WAITING,
    "queued": Phase.WAITING,
    "processing": Phase.RUNNING,
    "dreaming": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
}


class LumaFamily(TaskFamily):
    """Luma generations, and extensions of a task named in the route; see the module docstring."""

    name = "luma"

    def accepts(self, path: str) -> bool:
        match = _ROUTE.match(path)
        return match is not None and match["id"] != PLACEHOLDER

    def route_names(self) -> tuple[str, ...]:
        return ("/luma/generations", "/luma/generations/{id}/extend", "/dream-machine/v1/generations")

    def path_model(self, path: str) -> str | None:
        match = _ROUTE.match(path)
        return None if match is None else EXTEND_MODEL if match["id"] else CREATE_MODEL

    def check(self, body: Body) -> None:
        if AFTER in body or BUTTON in body:
            raise BodyError(
                f'"{AFTER}" extends another line\'s video only on the route written with the placeholder: '
                f'"url": "/luma/generations/{PLACEHOLDER}/extend", "body": {{"{AFTER}": "<custom_id>", ...}}'
            )
        _check_prompt(body)

    def read_submit(self, status: int, content: bytes) -> Submitted:
        answer = json_or_none(content)
        if isinstance(answer, dict) and "state" in answer and (task_id := text_of(answer.get("id"))):
            return Submitted(task_id)
        if isinstance(answer, dict) and isinstance(answer.get("detail"), str | list):
            return Submitted(None, f"refused: {text_of(answer['detail'])}")  # the official API's errors
        if isinstance(answer, dict) and ("code" in answer or "data" in answer):
            return read_envelope_submit(content, status)
        if isinstance(answer, dict) and (task_id := text_of(answer.get("id"))):
            return Submitted(task_id)
        return Submitted(None, f"refused: {envelope_error(answer, status)}")

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        match = _ROUTE.match(path)
        base = match["base"] if match else "/luma/generations"
        return PollCall(Endpoint(f"{base}/{ids[0]}"))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        if isinstance(answer, dict) and isinstance(answer.get("data"), dict) and "state" not in answer:
            data = answer["data"]
            view = dto_view(data) if "status" in data else generation_view(data)
        else:
            view = generation_view(answer)
        return one_view(view)


class LumaExtendFamily(LumaFamily):
    """``{base}/{task_id}/extend`` with ``"after"``: extends the video another line made."""

    name = "luma_extend"

    def accepts(self, path: str) -> bool:
        match = _ROUTE.match(path)
        return match is not None and match["id"] == PLACEHOLDER

    def route_names(self) -> tuple[str, ...]:
        return (f"/luma/generations/{PLACEHOLDER}/extend",)

    def check(self, body: Body) -> None:
        if not isinstance(body.get(AFTER), str) or not body[AFTER]:
            raise BodyError(
                f'the route /luma/generations/{PLACEHOLDER}/extend needs "{AFTER}": the custom_id of the '
                "line whose video to extend (or write that task's id in the url instead of the placeholder)"
            )
        if BUTTON in body:
            raise BodyError(f'"{BUTTON}" is for Midjourney follow-ups; a Luma extension takes "{AFTER}" only')
        _check_prompt(body)

    def follow_up(self, call: SubmitCall, follow: FollowUp) -> SubmitCall:
        """The extend route of the origin's task."""
        path = call.endpoint.path.replace(PLACEHOLDER, follow.task_id)
        return SubmitCall(Endpoint(path), call.body)


def _check_prompt(body: Body) -> None:
    if not any(isinstance(body.get(k), str) and body[k].strip() for k in ("user_prompt", "prompt")):
        raise BodyError('a Luma body needs a non-blank "user_prompt" (the official API\'s "prompt")')


def generation_view(generation: Any) -> TaskView | None:
    """A Luma generation object as a view; None when it is none."""
    if not isinstance(generation, dict) or not (task_id := text_of(generation.get("id"))):
        return None
    state = (text_of(generation.get("state")) or "").lower()
    phase = PHASES.get(state, Phase.WAITING)
    reason = text_of(generation.get("failure_reason")) or text_of(generation.get("fail_reason"))
    if reason and phase is not Phase.SUCCEEDED:
        phase = Phase.FAILED
    url = video_url(generation) if phase is Phase.SUCCEEDED else None
    return TaskView(task_id, phase, None, state or None, (url,) if url else (), reason, raw=generation)


def video_url(generation: dict[str, Any]) -> str | None:
    """The video of a completed generation, in any of the shapes relays give it."""
    for holder in (generation, generation.get("artifact"), generation.get("assets")):
        video = holder.get("video") if isinstance(holder, dict) else None
        if isinstance(video, str) and video:
            return video
        if isinstance(video, dict) and (url := text_of(video.get("download_url") or video.get("url"))):
            return url
    return None
