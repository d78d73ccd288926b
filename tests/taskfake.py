"""A fake relay of task routes for ``httpx.MockTransport``, written from ``relay-task-apis.md``.

Tasks move one step a poll (not by the clock), so a test sees a whole lifecycle without waiting:
MJ ``""`` → SUBMITTED → IN_PROGRESS 50% → SUCCESS with buttons (or FAILURE); Suno and video
alike in their own words. A prompt asks for faults: ``banned`` (code 24), ``queuefull`` (code 23
once), ``lost`` (the submit runs and is charged, its answer never comes), ``fails`` (the task
fails and is refunded), ``modal`` (MJ status MODAL until ``/mj/submit/modal``), ``nofile`` (the
result URL answers 404). A modal step's prompt may ask for ``lost`` (taken and charged, no answer)
or ``dropped`` (no answer, never taken). Result files live on ``files.test``, which records what headers it saw.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson

PRICES = {
    "mj_imagine": Decimal("0.1"),
    "mj_upscale": Decimal("0.05"),
    "mj_variation": Decimal("0.1"),
    "mj_blend": Decimal("0.1"),
    "mj_describe": Decimal("0.05"),
    "mj_modal": Decimal("0.1"),
    "mj_inpaint": Decimal(0),
    "swap_face": Decimal("0.05"),
    "suno_music": Decimal("0.1"),
    "suno_lyrics": Decimal("0.01"),
    "kling-v1": Decimal("0.5"),
    "sora-2": Decimal("0.4"),
}
FILES = "http://files.test"


@dataclass
class FakeTask:
    """One task the fake relay holds."""

    id: str
    kind: str
    model: str
    body: dict[str, Any]
    polls: int = 0
    modal_done: bool = False


@dataclass
class FakeRelay:
    """The handler of a MockTransport; see the module docstring."""

    tasks: dict[str, FakeTask] = field(default_factory=dict)
    charged: list[tuple[str, Decimal]] = field(default_factory=list)  # (task id, USD)
    refunded: list[str] = field(default_factory=list)
    submits: list[dict[str, Any]] = field(default_factory=list)
    file_headers: list[httpx.Headers] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)  # the poll routes called
    queue_full_once: set[str] = field(default_factory=set)
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    @property
    def billed(self) -> Decimal:
        """Charges minus refunds, in USD."""
        refunds = set(self.refunded)
        return sum((usd for tid, usd in self.charged if tid not in refunds), Decimal(0))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        url, path = request.url, request.url.path
        if url.host == "files.test":
            return self._file(request)
        body = orjson.loads(request.content) if request.content else {}
        if path.endswith("/mj/task/list-by-condition"):
            self.polls.append("mj")
            return _json([self._mj_view(self.tasks[i]) for i in body["ids"] if i in self.tasks])
        if "/mj/submit/" in path or path.endswith("/mj/insight-face/swap"):
            return self._mj_submit(request, path, body)
        if path == "/suno/fetch":
            self.polls.append("suno")
            return _json(
                {"code": "success", "message": "", "data": [self._dto(self.tasks[i]) for i in body["ids"]]}
            )
        if path.startswith("/suno/submit/"):
            return self._task_submit(request, "suno", "suno_" + path.rsplit("/", 1)[1], body, suno=True)
        if request.method == "GET" and path.startswith("/v1/video/generations/"):
            self.polls.append("video")
            return self._video_get(path.rsplit("/", 1)[1], openai=False)
        if request.method == "GET" and path.endswith("/content"):
            self.file_headers.append(request.headers)
            return httpx.Response(
                200, content=b"MP4:" + path.split("/")[3].encode(), headers={"content-type": "video/mp4"}
            )
        if request.method == "GET" and path.startswith("/v1/videos/"):
            self.polls.append("video")
            return self._video_get(path.rsplit("/", 1)[1], openai=True)
        if path in ("/v1/video/generations", "/v1/videos"):
            return self._task_submit(request, "video", str(body.get("model")), body, suno=False)
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    # --- Midjourney ------------------------------------------------------------------------------

    def _mj_submit(self, request: httpx.Request, path: str, body: dict[str, Any]) -> httpx.Response:
        self.submits.append({"path": path, **body})
        action = path.rsplit("/", 1)[1]
        prompt = str(body.get("prompt", ""))
        if "banned" in prompt:
            return _json(
                {"code": 24, "description": "可能包含敏感词", "properties": {"bannedWord": "banned"}}
            )
        if "queuefull" in prompt and prompt not in self.queue_full_once:
            self.queue_full_once.add(prompt)
            return _json({"code": 23, "description": "队列已满，请稍后尝试", "result": ""})
        if action == "modal":
            if "dropped" in prompt:  # the connection broke before the relay read the step
                raise httpx.ReadTimeout("the answer never came", request=request)
            origin = self.tasks[str(body["taskId"])]
            origin.modal_done = True
            task = self._new("mj", "mj_modal", {**origin.body, "prompt": body.get("prompt", "")})
            if "lost" in prompt:  # the relay took and charged the step; its answer never came
                raise httpx.ReadTimeout("the answer never came", request=request)
            return _json({"code": 1, "description": "提交成功", "result": task.id})
        model = "swap_face" if action == "swap" else f"mj_{action}"
        if action == "action":
            model = "mj_upscale" if "upsample" in str(body.get("customId")) else "mj_variation"
            if "Inpaint" in str(body.get("customId")):
                model = "mj_inpaint"
        task = self._new("mj", model, body)
        if "lost" in prompt:
            raise httpx.ReadTimeout("the answer never came", request=request)
        if model == "mj_inpaint":
            return _json({"code": 21, "description": "Waiting for window confirm", "result": task.id})
        return _json(
            {"code": 22, "description": "排队中", "result": task.id, "properties": {"numberOfQueues": 1}}
        )

    def _mj_view(self, task: FakeTask) -> dict[str, Any]:
        task.polls += 1
        step, prompt = task.polls, str(task.body.get("prompt", ""))
        view: dict[str, Any] = {
            "id": task.id,
            "action": task.model.upper(),
            "prompt": prompt,
            "status": "",
            "progress": "0%",
            "imageUrl": "",
            "failReason": "",
            "buttons": None,
        }
        if ("modal" in prompt and not task.modal_done and step >= 2) or (
            task.model == "mj_inpaint" and not task.modal_done
        ):
            return view | {"status": "MODAL"}
        if step == 1:
            return view
        if step == 2:
            return view | {"status": "SUBMITTED"}
        if step == 3:
            return view | {
                "status": "IN_PROGRESS",
                "progress": "50%",
                "imageUrl": f"{FILES}/mj/{task.id}.png?rand=1",
            }
        if "fails" in prompt:
            self._refund(task)
            return view | {"status": "FAILURE", "progress": "100%", "failReason": "image generation failed"}
        url = f"{FILES}/{'missing' if 'nofile' in prompt else 'mj'}/{task.id}.png"
        buttons = [{"customId": f"MJ::JOB::upsample::{n}::{task.id}", "label": f"U{n}", "emoji": "", "type": 2}
                   for n in range(1, 5)] + [{"customId": f"MJ::JOB::variation::{n}::{task.id}", "label": f"V{n}"}
                                            for n in range(1, 5)]  # fmt: skip
        return view | {"status": "SUCCESS", "progress": "100%", "imageUrl": url, "buttons": buttons}

    # --- Suno and video --------------------------------------------------------------------------

    def _task_submit(
        self, request: httpx.Request, kind: str, model: str, body: dict[str, Any], *, suno: bool
    ) -> httpx.Response:
        self.submits.append({"path": request.url.path, **body})
        seconds = (
            body.get("seconds") or body.get("duration") or (4 if request.url.path == "/v1/videos" else 5)
        )
        times = Decimal(str(seconds)) if model.startswith("sora") else Decimal(1)  # Sora's ratios only
        task = self._new(kind, model, body, times=times)
        if "lost" in str(body.get("prompt", "")):
            raise httpx.ReadTimeout("the answer never came", request=request)
        if suno:
            return _json({"code": "success", "message": "", "data": task.id})
        return _json(
            {
                "id": task.id,
                "task_id": task.id,
                "object": "video",
                "model": model,
                "status": "queued",
                "progress": 0,
                "created_at": 1760000000,
            }
        )

    def _dto(self, task: FakeTask) -> dict[str, Any]:
        task.polls += 1
        status = ["NOT_START", "SUBMITTED", "IN_PROGRESS"][task.polls - 1] if task.polls <= 3 else "SUCCESS"
        fails = "fails" in str(task.body.get("prompt", ""))
        dto: dict[str, Any] = {
            "task_id": task.id,
            "action": "MUSIC",
            "status": status,
            "fail_reason": "",
            "progress": "30%" if status == "IN_PROGRESS" else "0%",
            "data": None,
        }
        if status == "SUCCESS" and fails:
            self._refund(task)
            return dto | {"status": "FAILURE", "progress": "100%", "fail_reason": "upstream refused"}
        if status == "SUCCESS" and task.kind == "suno":
            dto["data"] = [{"id": f"{task.id}-{n}", "audio_url": f"{FILES}/suno/{task.id}-{n}.mp3", "status": "complete"}
                           for n in (1, 2)]  # fmt: skip
            dto["progress"] = "100%"
        elif status == "SUCCESS":
            dto |= {"result_url": f"{FILES}/video/{task.id}.mp4", "progress": "100%"}
        return dto

    def _video_get(self, task_id: str, *, openai: bool) -> httpx.Response:
        if task_id not in self.tasks:
            return httpx.Response(
                400, json={"code": "task_not_exist", "message": "task_not_exist", "data": None}
            )
        dto = self._dto(self.tasks[task_id])
        if not openai:
            return _json({"code": "success", "message": "", "data": dto})
        words = {
            "NOT_START": "queued",
            "SUBMITTED": "queued",
            "IN_PROGRESS": "in_progress",
            "SUCCESS": "completed",
            "FAILURE": "failed",
        }
        video: dict[str, Any] = {
            "id": task_id,
            "object": "video",
            "status": words[dto["status"]],
            "progress": 30,
        }
        if dto["status"] == "FAILURE":
            video["error"] = {"message": dto["fail_reason"]}
        return _json(video)

    # --- shared ----------------------------------------------------------------------------------

    def _new(self, kind: str, model: str, body: dict[str, Any], *, times: Decimal = Decimal(1)) -> FakeTask:
        task = FakeTask(str(next(self._ids)), kind, model, body)
        self.tasks[task.id] = task
        self.charged.append((task.id, PRICES.get(model, Decimal(0)) * times))  # video: × seconds
        return task

    def _refund(self, task: FakeTask) -> None:
        if task.id not in self.refunded:
            self.refunded.append(task.id)

    def _file(self, request: httpx.Request) -> httpx.Response:
        self.file_headers.append(request.headers)
        if request.url.path.startswith("/missing/"):
            return httpx.Response(404)
        kind = {"png": "image/png", "mp3": "audio/mpeg", "mp4": "video/mp4"}[
            request.url.path.rsplit(".", 1)[1]
        ]
        return httpx.Response(200, content=file_bytes(request.url.path), headers={"content-type": kind})


def file_bytes(path: str) -> bytes:
    """What the files host serves for a path: deterministic bytes naming it."""
    return b"FILE:" + path.encode()


def _json(value: Any) -> httpx.Response:
    return httpx.Response(200, content=orjson.dumps(value), headers={"content-type": "application/json"})
