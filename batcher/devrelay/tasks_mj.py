"""The stand-in relay's Midjourney routes, as new-api serves them in front of a midjourney-proxy.

Submits (``/mj/submit/*``, ``/mj/insight-face/swap``) answer ``{code, description, result,
properties}`` with HTTP 200: code 1 (submitted), 21 (existed, or a modal is needed), 22 (in
queue), 23 (queue full), 24 (banned prompt), 4 (the upstream's validation). new-api rewrites 22
to 1 always and 21 to 1 unless the action is Inpaint or CustomZoom (``RelayConfig.mj_rewrite``;
off, the relay answers as a bare proxy does). new-api's own checks answer 400
``{"description": "<reason> ", "type": "upstream_error", "code": 4}``.

Fetches read the task table: ``GET /mj/task/{id}/fetch`` (bare object; unknown or another key's:
400 ``task_no_found``), ``POST /mj/task/list-by-condition {"ids": [...]}`` (bare array of the
caller's tasks). Every route is also served under a mode prefix (``/mj-fast/mj/...``).

Faults a submit may draw (a ``[[fault:KIND]]`` marker in its body, or at random): ``task_fail``,
``task_stuck``, ``unfetchable``, ``result_timeout``, ``queue_full`` (23), ``banned`` (24),
``mj_queued`` (the upstream said 22), ``mj_existed`` (21 with an already finished task).
"""

from __future__ import annotations

from typing import Any

from batcher.devrelay.tasks_billing import QUOTA_PER_UNIT, quota_of
from batcher.devrelay.tasks_files import file_bytes, file_url
from batcher.devrelay.tasks_gate import Reply, Route, TaskCall
from batcher.devrelay.tasks_mj_view import (
    MODAL_ACTIONS,
    UnknownAction,
    action_of,
    buttons_of,
    image_name,
    task_object,
)
from batcher.devrelay.tasks_table import Family, Phase, Task, apply_faults

MJ_FAIL_REASON = "Request cancelled due to image filters"
MODE_PREFIX = "/{mode:mj-[A-Za-z0-9_-]+}"
_PROPERTIES = {"discordInstanceId": "1118138338562560102"}
_CHANGE = {"UPSCALE": "upsample", "VARIATION": "variation"}


def mj_error(reason: str, status: int = 400) -> Reply:
    """new-api's own Midjourney error (``"%s %s"`` of description and result: a trailing space)."""
    return Reply({"description": f"{reason} ", "type": "upstream_error", "code": 4}, status)


def upstream(code: int, description: str, result: Any = None, **properties: Any) -> Reply:
    """A midjourney-proxy answer relayed as it is (HTTP 200, whatever the code)."""
    return Reply({"code": code, "description": description, "result": result, "properties": properties})


def _model(action: str) -> str:
    return "swap_face" if action == "SWAP_FACE" else f"mj_{action.lower()}"


def _quota_refusal(call: TaskCall, quota: int) -> Reply | None:
    balance = int(call.config.balance_usd * QUOTA_PER_UNIT)
    return mj_error("quota_not_enough") if call.table.ledger.net_quota + quota > balance else None


def submit(call: TaskCall, action: str, *, origin: Task | None = None) -> Reply:
    """Record, charge and answer one submit (the faults it drew decide how the task ends)."""
    model = _model(action)
    quota = 0 if action in MODAL_ACTIONS else quota_of(model)
    refused = _quota_refusal(call, quota) or _refused(call)
    if refused is not None:
        return refused
    task = _record(call, action, model, origin)
    call.table.ledger.charge(task.id, model, quota)
    code, text = _code(call, action)
    if code == 21 and action in MODAL_ACTIONS:
        prompt = task.extra["prompt"]
        return upstream(21, "Waiting for window confirm", task.id, finalPrompt=prompt, remix=True)
    if code == 21:
        url = file_url(call.files_origin, task.file_prefix, f"mj-{task.id}.png")
        return upstream(21, text, task.id, status="SUCCESS", imageUrl=url)
    if code == 22:
        return upstream(22, text, task.id, numberOfQueues=1, **_PROPERTIES)
    return upstream(1, "提交成功", task.id, **_PROPERTIES)


def _refused(call: TaskCall) -> Reply | None:
    if call.fault == "queue_full":
        return upstream(23, "队列已满，请稍后尝试", call.table.new_id(Family.MJ)[0], **_PROPERTIES)
    if call.fault == "banned":
        prompt = str(call.body.get("prompt", ""))
        word = prompt.split(maxsplit=1)[0] if prompt else ""
        return upstream(24, "可能包含敏感词", None, promptEn=prompt, bannedWord=word)
    return None


def _code(call: TaskCall, action: str) -> tuple[int, str]:
    """The upstream's code, after new-api's rewrites (22→1, 21→1 but for Inpaint and CustomZoom)."""
    rewrite = call.config.mj_rewrite
    if action in MODAL_ACTIONS:
        return 21, "Waiting for window confirm"
    if call.fault == "mj_existed":
        return (1, "提交成功") if rewrite else (21, "任务已存在")
    if call.fault == "mj_queued":
        return (1, "提交成功") if rewrite else (22, "排队中，前面还有1个任务")
    return 1, "提交成功"


def _record(call: TaskCall, action: str, model: str, origin: Task | None) -> Task:
    task_id, row = call.table.new_id(Family.MJ)
    prompt = call.body.get("prompt") or (origin.extra["prompt"] if origin else "")
    task = Task(task_id, Family.MJ, action, model, call.owner, call.table.clock(), call.body, row=row,
                origin_id=origin.id if origin else "", extra={"prompt": str(prompt)})  # fmt: skip
    apply_faults(task, call.fault, MJ_FAIL_REASON)
    task.done_at_submit = call.fault == "mj_existed"
    task.awaiting_modal = action in MODAL_ACTIONS
    return call.table.add(task)


# --- submit routes ---------------------------------------------------------------------------


def imagine(call: TaskCall) -> Reply:
    return submit(call, "IMAGINE") if call.body.get("prompt") else mj_error("prompt_is_required")


def describe(call: TaskCall) -> Reply:
    if not (call.body.get("base64") or call.body.get("link")):
        return upstream(4, "base64不能为空")
    return submit(call, "DESCRIBE")


def blend(call: TaskCall) -> Reply:
    images = call.body.get("base64Array")
    if not isinstance(images, list) or not 2 <= len(images) <= 5:
        return upstream(4, "base64List参数错误")
    return submit(call, "BLEND")


def _with_prompt(action: str) -> Any:
    def handle(call: TaskCall) -> Reply:
        return submit(call, action) if call.body.get("prompt") else upstream(4, "prompt不能为空")

    return handle


def swap_face(call: TaskCall) -> Reply:
    if not (call.body.get("sourceBase64") and call.body.get("targetBase64")):
        return mj_error("sour_base64_and_target_base64_is_required")
    return submit(call, "SWAP_FACE")


def upload(call: TaskCall) -> Reply:
    """``upload-discord-images``: finished at once, its answer lists the uploaded images' URLs."""
    images = call.body.get("base64Array")
    if not isinstance(images, list) or not images:
        return upstream(4, "base64List参数错误")
    reply = submit(call, "UPLOAD")
    if reply.payload.get("code") != 1:
        return reply
    task = call.table.tasks[reply.payload["result"]]
    task.done_at_submit = True
    urls = [file_url(call.files_origin, "", f"mj-{task.id}-{i}.png") for i in range(len(images))]
    return upstream(1, "上传成功", urls)


def action(call: TaskCall) -> Reply:
    custom_id = call.body.get("customId")
    if not custom_id:
        return mj_error("custom_id_is_required")
    return _follow(call, call.body.get("taskId"), str(custom_id))


def change(call: TaskCall) -> Reply:
    act, index, task_id = call.body.get("action"), call.body.get("index"), call.body.get("taskId")
    if not task_id:
        return mj_error("task_id_is_required")
    if act not in ("UPSCALE", "VARIATION", "REROLL"):
        return mj_error("action_is_required")
    if not index:
        return mj_error("index_is_required")
    return _change(call, str(task_id), str(act), index)


def simple_change(call: TaskCall) -> Reply:
    content = str(call.body.get("content") or "")
    if not content:
        return mj_error("content_is_required")
    parts = content.split()
    word = parts[1].upper() if len(parts) == 2 else ""
    if word == "R":
        return _change(call, parts[0], "REROLL", 1)
    if len(word) != 2 or word[0] not in "UV" or word[1] not in "1234":
        return mj_error("content_parse_failed")
    return _change(call, parts[0], "UPSCALE" if word[0] == "U" else "VARIATION", int(word[1]))


def _change(call: TaskCall, task_id: str, act: str, index: Any) -> Reply:
    """The classic change: the origin's button for ``act`` and ``index``."""
    origin = call.table.find(task_id, call.owner)
    if origin is None:
        return mj_error("task_not_found")
    kind = _CHANGE.get(act, "reroll")
    wanted = [b["customId"] for b in buttons_of(origin) if f"::{kind}::" in b["customId"]]
    pick = [c for c in wanted if kind == "reroll" or c.split("::")[3] == str(index)]
    return _follow(call, task_id, pick[0] if pick else f"MJ::JOB::{kind}::{index}::none")


def _follow(call: TaskCall, task_id: Any, custom_id: str) -> Reply:
    """An action on an origin task through one of its buttons (new-api's checks, then submit)."""
    try:
        act, _ = action_of(custom_id)
    except UnknownAction as exc:
        message = {"message": str(exc), "type": "new_api_error", "code": str(exc).split(":")[0]}
        return Reply({"error": message}, 400)
    origin = call.table.find(task_id, call.owner)
    if origin is None:
        return mj_error("task_not_found")
    if call.table.stage(origin).phase is not Phase.SUCCEEDED:
        return mj_error("task_status_not_success")
    if custom_id not in {b["customId"] for b in buttons_of(origin)}:
        return upstream(4, "customId不存在或已失效")
    return submit(call, act, origin=origin)


def modal(call: TaskCall) -> Reply:
    """The window confirm of an Inpaint or CustomZoom: the same task goes on, charged ``mj_modal``."""
    task = call.table.find(call.body.get("taskId"), call.owner)
    if task is None:
        return mj_error("task_not_found")
    if not task.awaiting_modal:
        return upstream(4, "任务状态不是MODAL")
    if task.action == "INPAINT" and not call.body.get("maskBase64"):
        return upstream(4, "maskBase64不能为空")
    if task.action == "CUSTOM_ZOOM" and "--zoom" not in str(call.body.get("prompt", "")):
        return upstream(4, "zoom参数错误")
    quota = quota_of("mj_modal")
    refused = _quota_refusal(call, quota)
    if refused is not None:
        return refused
    task.awaiting_modal, task.started = False, call.table.clock()
    task.extra["prompt"] = str(call.body.get("prompt") or task.extra["prompt"])
    apply_faults(task, call.fault, MJ_FAIL_REASON)
    call.table.ledger.charge(task.id, "mj_modal", quota)
    return upstream(1, "提交成功", task.id, **_PROPERTIES)


# --- fetch routes ----------------------------------------------------------------------------


def fetch(call: TaskCall) -> Reply:
    task = call.table.find(call.match.get("id"), call.owner)
    if task is None:
        return mj_error("task_no_found")
    return Reply(task_object(task, call.table.stage(task), call.files_origin))


def list_by_condition(call: TaskCall) -> Reply:
    if call.raw.strip() and not call.body and call.raw.strip() != b"{}":
        return mj_error("do_request_failed")
    ids = call.body.get("ids")
    found = [call.table.find(i, call.owner) for i in ids] if isinstance(ids, list) else []
    tasks = [t for t in found if t is not None]
    return Reply([task_object(t, call.table.stage(t), call.files_origin) for t in tasks])


def image_seed(call: TaskCall) -> Reply:
    task = call.table.find(call.match.get("id"), call.owner)
    if task is None:
        return mj_error("task_no_found")
    return upstream(1, "成功", str(int(task.id) % 4_294_967_296))


def image_proxy(call: TaskCall) -> Reply:
    """new-api's ``GET /mj/image/{id}`` (no key): the image of a task, whoever's it is."""
    task = call.table.tasks.get(call.match.get("id", ""))
    if task is None or task.family is not Family.MJ or call.table.stage(task).phase is not Phase.SUCCEEDED:
        return Reply(b"", 404, content_type="text/plain")
    data = file_bytes(task.file_prefix.replace("slow-", "missing-") + image_name(task))
    return (
        Reply(b"", 404, content_type="text/plain") if data is None else Reply(data, content_type="image/png")
    )


def mj_routes() -> list[Route]:
    """Every Midjourney route, plain and under a mode prefix."""
    plain = [
        Route("POST", "/mj/submit/imagine", imagine),
        Route("POST", "/mj/submit/describe", describe),
        Route("POST", "/mj/submit/blend", blend),
        Route("POST", "/mj/submit/shorten", _with_prompt("SHORTEN")),
        Route("POST", "/mj/submit/edits", _with_prompt("EDITS")),
        Route("POST", "/mj/submit/video", _with_prompt("VIDEO")),
        Route("POST", "/mj/submit/action", action),
        Route("POST", "/mj/submit/change", change),
        Route("POST", "/mj/submit/simple-change", simple_change),
        Route("POST", "/mj/submit/modal", modal),
        Route("POST", "/mj/submit/upload-discord-images", upload),
        Route("POST", "/mj/insight-face/swap", swap_face),
        Route("GET", "/mj/task/{id}/fetch", fetch),
        Route("GET", "/mj/task/{id}/image-seed", image_seed),
        Route("POST", "/mj/task/list-by-condition", list_by_condition),
        Route("GET", "/mj/image/{id}", image_proxy, public=True),
    ]
    return plain + [Route(r.method, MODE_PREFIX + r.path, r.handler) for r in plain]
