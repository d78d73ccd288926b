"""Every async task route the stand-in relay serves: Midjourney, Suno, video, Luma and Runway."""

from __future__ import annotations

from batcher.devrelay.tasks_gate import Route
from batcher.devrelay.tasks_luma import luma_routes
from batcher.devrelay.tasks_mj import mj_routes
from batcher.devrelay.tasks_runway import runway_routes
from batcher.devrelay.tasks_suno import suno_routes
from batcher.devrelay.tasks_video import video_routes


def task_routes() -> list[Route]:
    """The async task routes of every family, registered by ``tasks_gate.TaskGate``."""
    return mj_routes() + suno_routes() + video_routes() + luma_routes() + runway_routes()
