"""Video tasks through new-api: the unified route, the OpenAI-style one and Kling's native ones.

- ``/v1/video/generations``: submit answers an ``OpenAIVideo`` (``id``/``task_id``); polls are
  ``GET /v1/video/generations/{id}`` in the task envelope (``data`` a TaskDto, ``result_url``).
- ``/v1/videos`` (Sora style): polls are ``GET /v1/videos/{id}``, an OpenAI video object
  (``queued|in_progress|completed|failed``); the file is ``/v1/videos/{id}/content`` on the relay.
- ``/kling/v1/videos/text2video`` and ``image2video``: polls ``GET`` the same route ``/{id}``.

Versions differ (``relay-task-apis.md`` §4.3): the task id is ``task_id`` ‖ ``id`` ‖
``data.task_id``; an old relay keeps the success URL in ``fail_reason``. Video polls go one task
a call (new-api has no batch fetch for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

from jobs.endpoints import Endpoint
from workers.endpoints.base import Body, BodyError
from workers.endpoints.suno import read_envelope_submit
from workers.endpoints.taskfamily import (
    Phase,
    PollCall,
    Submitted,
    TaskFamily,
    TaskView,
    dto_view,
    json_or_none,
    number,
    one_view,
    text_of,
)

UNIFIED, OPENAI = "/v1/video/generations", "/v1/videos"
KLING = ("/kling/v1/videos/text2video", "/kling/v1/videos/image2video")
_OPENAI_PHASES = {
    "queued": Phase.WAITING,
    "pending": Phase.WAITING,
    "in_progress": Phase.RUNNING,
    "processing": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "cancelled": Phase.FAILED,
    "unknown": Phase.FAILED,
}


BIG_SIZES = ("1792x1024", "1024x1792")
BIG_SIZE_RATIO = Decimal("1.666667")


class VideoFamily(TaskFamily):
    """Video task routes; see the module docstring."""

    name = "video"
    paths: ClassVar[tuple[str, ...]] = (UNIFIED, *KLING)
    default_seconds: ClassVar[int] = 5

    def calls(self, body: Body) -> Decimal:
        """new-api's other ratios of a Sora video (its adaptor's ``EstimateBilling``): seconds × size.

        Other video models cost their price a call (Kling may settle by its own units later).
        """
        if not str(body.get("model") or "").startswith("sora"):
            return Decimal(1)
        seconds = number(body.get("seconds")) or number(body.get("duration")) or Decimal(self.default_seconds)
        return seconds * (BIG_SIZE_RATIO if body.get("size") in BIG_SIZES else Decimal(1))

    def line_model(self, path: str, body: Body) -> str | None:
        model = body.get("model_name") if path in KLING and "model" not in body else None
        return model if isinstance(model, str) and model else None

    def check(self, body: Body) -> None:
        if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
            raise BodyError('a video body needs a non-blank "prompt"')

    def read_submit(self, status: int, content: bytes) -> Submitted:
        answer = json_or_none(content)
        if isinstance(answer, dict) and isinstance(answer.get("code"), int) and answer["code"] != 0:
            return Submitted(None, f"refused (code {answer['code']}): {text_of(answer.get('message'))}")
        return read_envelope_submit(content, status)

    def poll_call(self, path: str, ids: Sequence[str]) -> PollCall:
        return PollCall(Endpoint(f"{path}/{ids[0]}"))

    def read_poll(self, content: bytes) -> list[TaskView]:
        answer = json_or_none(content)
        if isinstance(answer, dict) and answer.get("object") == "video":
            return [openai_view(answer)]
        data = answer.get("data") if isinstance(answer, dict) else None
        view = dto_view(data)
        return one_view(view)


class OpenAIVideoFamily(VideoFamily):
    """``/v1/videos``, OpenAI's (Sora's) shape: seconds default to 4."""

    name = "video_openai"
    paths: ClassVar[tuple[str, ...]] = (OPENAI,)
    default_seconds: ClassVar[int] = 4


def openai_view(video: dict[str, Any]) -> TaskView:
    """An OpenAI video object as a view; a completed one without a URL is fetched from the relay."""
    task_id = text_of(video.get("id")) or text_of(video.get("task_id")) or ""
    status = text_of(video.get("status")) or ""
    phase = _OPENAI_PHASES.get(status, Phase.WAITING)
    metadata, error = video.get("metadata"), video.get("error")
    url = text_of(metadata.get("url")) if isinstance(metadata, dict) else None
    if phase is Phase.SUCCEEDED and url is None:
        url = f"{OPENAI}/{task_id}/content"  # on the relay itself: the key goes along
    reason = text_of(error.get("message")) if isinstance(error, dict) else text_of(error)
    progress = video.get("progress")
    shown = f"{progress}%" if isinstance(progress, int | float) else text_of(progress)
    return TaskView(task_id, phase, shown, status or None, (url,) if url else (), reason, raw=video)
