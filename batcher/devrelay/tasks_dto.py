"""What Suno and video tasks share on the stand-in relay: new-api's envelopes, TaskDto and pre-charge.

- Success envelope ``{"code": "success", "message": "", "data": …}``; errors are new-api's
  ``TaskError`` ``{"code": "<string>", "message": "<string>", "data": null}`` with its status
  (``task_not_exist`` 400, ``invalid_request`` 400, ``insufficient_user_quota`` 403, a 429's
  message replaced by ``当前分组上游负载已饱和，请稍后再试``).
- ``TaskDto`` (new-api ``dto/task.go``): times in epoch seconds, status ``NOT_START`` at insert,
  then the upstream's ``SUBMITTED`` / ``QUEUED`` / ``IN_PROGRESS``, then ``SUCCESS`` / ``FAILURE``;
  ``quota`` is 0 once refunded, the final charge once a success re-priced it.
- ``precharge``: the submit's price is checked against the balance and charged before the
  upstream is called; a refused submit (queue full, banned prompt) is refunded at once, so it
  never shows in the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from batcher.devrelay.tasks_billing import QUOTA_PER_UNIT, quota_of
from batcher.devrelay.tasks_gate import Reply, TaskCall
from batcher.devrelay.tasks_table import Family, Phase, Stage, Task, apply_faults

OVERLOADED = "当前分组上游负载已饱和，请稍后再试"
STATUS = {
    Phase.WAITING: "NOT_START",
    Phase.MODAL: "NOT_START",
    Phase.SUBMITTED: "SUBMITTED",
    Phase.QUEUED: "QUEUED",
    Phase.RUNNING: "IN_PROGRESS",
    Phase.SUCCEEDED: "SUCCESS",
    Phase.FAILED: "FAILURE",
}


def task_error(code: str, message: str, status: int = 400) -> Reply:
    """new-api's ``TaskError`` answer."""
    return Reply({"code": code, "message": OVERLOADED if status == 429 else message, "data": None}, status)


def success(data: Any) -> Reply:
    return Reply({"code": "success", "message": "", "data": data})


def not_found() -> Reply:
    return task_error("task_not_exist", "task_not_exist")


Banned = Callable[[], Reply]


def precharge(
    call: TaskCall, family: Family, action: str, model: str, *, ratios: dict[str, Decimal] | None = None,
    banned: Banned, fail_reason: str,
) -> Task | Reply:  # fmt: skip
    """Check the balance, refuse what the upstream refuses, else record the task and charge it."""
    quota = quota_of(model, ratios)
    left = int(call.config.balance_usd * QUOTA_PER_UNIT) - call.table.ledger.net_quota
    if quota > left:
        message = f"预扣费额度失败, 用户剩余额度: {left}, 需要预扣费额度: {quota}"
        return task_error("insufficient_user_quota", message, 403)
    if call.fault == "queue_full":
        return task_error("fail_to_fetch_task", OVERLOADED, 429)
    if call.fault == "banned":
        return banned()
    task_id, row = call.table.new_id(family)
    task = Task(task_id, family, action, model, call.owner, call.table.clock(), call.body, row=row,
                extra={"legacy_url": call.fault == "legacy_url"})  # fmt: skip
    apply_faults(task, call.fault, fail_reason)
    call.table.ledger.charge(task.id, model, quota)
    return call.table.add(task)


def task_dto(
    call: TaskCall, task: Task, stage: Stage, *, platform: str, result_url: str, data: Any
) -> dict[str, Any]:
    """new-api's ``TaskDto`` of ``task`` at ``stage`` (``result_url`` only once it succeeded)."""
    submitted, done = int(task.submitted), stage.progress == 100
    legacy = bool(task.extra.get("legacy_url"))
    fail_reason = task.fail_reason if stage.phase is Phase.FAILED else ""
    if legacy and stage.phase is Phase.SUCCEEDED:
        fail_reason = result_url  # new-api before 2026 kept the URL here
    dto: dict[str, Any] = {
        "id": task.row,
        "created_at": submitted,
        "updated_at": submitted + (2 if done else 1),
        "task_id": task.id,
        "platform": platform,
        "user_id": 1,
        "group": "default",
        "channel_id": 1,
        "quota": call.table.ledger.net_of(task.id),
        "action": task.action,
        "status": STATUS[stage.phase],
        "fail_reason": fail_reason,
        "submit_time": submitted,
        "start_time": submitted + 1 if stage.phase is not Phase.WAITING else 0,
        "finish_time": submitted + 2 if done else 0,
        "progress": f"{stage.progress}%",
        "properties": {
            "input": str(task.body.get("prompt") or task.body.get("gpt_description_prompt") or "")
        },
        "data": data,
    }
    if stage.phase is Phase.SUCCEEDED and result_url and not legacy:
        dto["result_url"] = result_url
    return dto
