"""Suno through new-api: ``/suno/submit/music`` and ``/suno/submit/lyrics``, polled in batches.

The submit answers in new-api's task envelope, ``{"code": "success", "data": "task_…"}`` (older
relays put the upstream id in ``data``); anything else is a refusal. Polls are
``POST /suno/fetch {"ids": [...]}``, answered ``{"code": "success", "data": [TaskDto, …]}``; a
music task's ``data`` is its clips (``audio_url``, ``video_url``, ``image_url``), a lyrics
task's one object with the text (``relay-task-apis.md`` §3).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from workers.endpoints.base import Body, BodyError
from workers.endpoints.taskfamily import (
    PollCall,
    Submitted,
    TaskFamily,
    TaskView,
    dto_view,
    envelope_error,
    json_or_none,
    text_of,
)

_ROUTE = re.compile(r"^/suno/submit/(?P<action>music|lyrics)$", re.IGNORECASE)


class SunoFamily(TaskFamily):
    """Suno task routes; see the module docstring."""

    name = "suno"
    route = _ROUTE
    poll_batch: ClassVar[int] = 50

    def route_names(self) -> tuple[str, ...]:
        return ("/suno/submit/music", "/suno/submit/lyrics")

    def path_model(self, path: str) -> str | None:
        match = _ROUTE.match(path)
        return f"suno_{match['action'].lower()}" if match else None

    def check(self, body: Body) -> None:
        if not any(
            isinstance(body.get(k), str) and body[k].strip() for k in ("prompt", "gpt_description_prompt")
        ):
            raise BodyError('a Suno body needs "prompt" (lyrics, custom music) or "gpt_description_prompt"')

    def read_submit(self, status: int, content: bytes) -> Submitted:
        return read_envelope_submit(content, status)

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        return PollCall(Endpoint("/suno/fetch"), orjson.dumps({"ids": list(ids)}))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        data = answer.get("data") if isinstance(answer, dict) else answer
        items = data if isinstance(data, list) else [data]
        return [view for item in items if (view := dto_view(item)) is not None]


def read_envelope_submit(content: bytes, status: int) -> Submitted:
    """A submit in new-api's task envelope: ``data`` is the task id (a string, or a task object)."""
    answer: Any = json_or_none(content)
    if not isinstance(answer, dict):
        return Submitted(None, f"not a task submit answer: {content[:200]!r}")
    data = answer.get("data")
    task_id = text_of(data) if isinstance(data, str) else None
    if isinstance(data, dict):
        task_id = text_of(data.get("task_id")) or text_of(data.get("id"))
    task_id = task_id or text_of(answer.get("task_id")) or text_of(answer.get("id"))
    code = answer.get("code")
    if task_id and code in ("success", 0, None, "0"):
        return Submitted(task_id)
    return Submitted(None, f"refused: {envelope_error(answer, status)}")
