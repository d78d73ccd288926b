"""The stand-in relay's task prices and its own billing ledger (what tests compare batcher's usage with).

Prices are new-api's per-call prices in USD (``defaultModelPrice``), by its model names:
``mj_<action>`` and ``swap_face`` for Midjourney, ``suno_music`` / ``suno_lyrics``, and the video
models by name. A charge is ``quota = int(price × ratios × 500000 × group ratio)`` (new-api's
``ModelPriceHelperPerCall``, ``QuotaPerUnit`` 500000); its USD is ``quota / 500000``.

Video is billed with the other ratios of new-api's Sora adaptor (``EstimateBilling``), applied here
to every video route and model alike (as batcher's video families count them): ``seconds``
(default 4 on ``/v1/videos``, 5 elsewhere) × ``size`` (1.666667 for 1792x1024 / 1024x1792, else
1). The submit answer carries them in the ``X-New-Api-Other-Ratios`` header, as new-api sends them.

Billing follows new-api: a Midjourney submit is charged once, when the upstream accepted it
(codes 1/21/22); Suno and video are pre-charged at submit. A task that fails (its failure, or the
relay's deadline) is refunded once, when the relay next looks at it (a fetch, or ``/_stats``),
Midjourney included (``RefundMidjourneyQuota``). Refused submits are never charged.

A Kling task that succeeded is settled again (new-api's ``settleTaskBillingOnComplete``): its
upstream's ``final_unit_deduction`` re-prices it, pre-charge × units deducted / units asked, so
a video shorter than asked (the ``short_video`` fault) costs less; the task row's ``quota`` (the
TaskDto's) shows the final charge. A model in ``RelayConfig.task_price_patches`` (new-api's
``TaskPricePatches``) is billed per call and keeps its pre-charge. Units: 1 for each 5 s asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

QUOTA_PER_UNIT = 500_000
BIG_SIZE_RATIO = Decimal("1.666667")  # Sora: 1792x1024 and 1024x1792
BIG_SIZES = ("1792x1024", "1024x1792")

TASK_PRICES: dict[str, Decimal] = {
    **{f"mj_{a}": Decimal("0.1") for a in ("imagine", "variation", "reroll", "blend", "modal", "zoom")},
    **{f"mj_{a}": Decimal("0.1") for a in ("shorten", "high_variation", "low_variation", "pan", "edits")},
    **{f"mj_{a}": Decimal("0.05") for a in ("describe", "upscale", "upload")},
    "swap_face": Decimal("0.05"),
    "mj_video": Decimal("0.8"),
    "mj_inpaint": Decimal(0),  # charged through mj_modal when the modal is submitted
    "mj_custom_zoom": Decimal(0),
    "suno_music": Decimal("0.1"),
    "suno_lyrics": Decimal("0.01"),
    "kling-v1": Decimal("0.05"),
    "kling-v1-6": Decimal("0.07"),
    "kling-v2-master": Decimal("0.2"),
    "sora-2": Decimal("0.1"),
    "sora-2-pro": Decimal("0.3"),
    "veo-3.0-generate-preview": Decimal("0.4"),
    "luma_video_api": Decimal("0.3"),
    "luma_video_extend_api": Decimal("0.25"),
    "runwayml_gen3a_turbo_5": Decimal("0.25"),
    "runwayml_gen3a_turbo_10": Decimal("0.5"),
    "runwayml_gen4_turbo_5": Decimal("0.3"),
    "runwayml_gen4_turbo_10": Decimal("0.6"),
    "runway_gen2": Decimal("0.2"),
    "runway_gen3_5": Decimal("0.25"),
    "runway_gen3_10": Decimal("0.5"),
    "runway_gen3_turbo_5": Decimal("0.15"),
    "runway_gen3_turbo_10": Decimal("0.3"),
}
"""USD per call before the other ratios; a video model not listed is refused (``model_price_error``)."""


def quota_of(model: str, ratios: dict[str, Decimal] | None = None) -> int:
    """The quota a call of ``model`` is charged: price × every ratio × 500000 (group ratio 1)."""
    price = TASK_PRICES[model]
    for ratio in (ratios or {}).values():
        price *= ratio
    return int(price * QUOTA_PER_UNIT)


def usd(quota: int) -> str:
    """A quota in USD, exact, as a decimal string (``"0.25"``)."""
    value = Decimal(quota) / QUOTA_PER_UNIT
    return format(value.normalize(), "f") if value else "0"


def video_ratios(seconds: Any, size: Any, *, default_seconds: int) -> dict[str, Decimal]:
    """The other ratios of a video submit: its seconds and its size (see the module docstring)."""
    try:
        secs = Decimal(str(seconds)) if seconds not in (None, "") else Decimal(default_seconds)
    except ArithmeticError:
        secs = Decimal(default_seconds)
    return {"seconds": secs, "size": BIG_SIZE_RATIO if size in BIG_SIZES else Decimal(1)}


@dataclass
class TaskBill:
    """What one task was charged and refunded."""

    model: str
    charged: int = 0
    refunded: int = 0
    refund_reason: str = ""
    adjusted: int = 0  # what the settlement on success added (negative: gave back)

    @property
    def net(self) -> int:
        return self.charged + self.adjusted - self.refunded


@dataclass
class Ledger:
    """Charges and refunds, per model and per task; ``snapshot`` is ``/_stats``' ``task_billing``."""

    tasks: dict[str, TaskBill] = field(default_factory=dict)
    charges: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)

    def charge(self, task_id: str, model: str, quota: int) -> None:
        """Charge ``quota`` for ``task_id`` (a modal step charges its task again); 0 is no charge."""
        if quota <= 0:
            return
        bill = self.tasks.setdefault(task_id, TaskBill(model))
        bill.charged += quota
        self.charges[model] += 1

    def refund(self, task_id: str, reason: str) -> None:
        """Give back all a task was charged, once."""
        bill = self.tasks.get(task_id)
        if bill is None or bill.refunded or not bill.charged:
            return
        bill.refunded, bill.refund_reason = bill.charged, reason
        self.refunds[bill.model] += 1

    def settle(self, task_id: str, final: int) -> None:
        """Re-price a succeeded task to ``final`` quota, once (new-api's ``RecalculateTaskQuota``)."""
        bill = self.tasks.get(task_id)
        if bill is None or bill.adjusted or bill.refunded or final <= 0:
            return
        bill.adjusted = final - bill.charged

    def net_of(self, task_id: str) -> int:
        """What a task costs now: its charges and settlement less its refund."""
        bill = self.tasks.get(task_id)
        return bill.net if bill else 0

    @property
    def net_quota(self) -> int:
        return sum(b.net for b in self.tasks.values())

    def snapshot(self) -> dict[str, Any]:
        """Totals, per model and per task; money as exact USD strings and quota ints."""
        charged = sum(b.charged for b in self.tasks.values())
        refunded = sum(b.refunded for b in self.tasks.values())
        adjusted = sum(b.adjusted for b in self.tasks.values())
        return {
            "charged_quota": charged,
            "refunded_quota": refunded,
            "adjusted_quota": adjusted,
            "net_quota": charged + adjusted - refunded,
            "charged_usd": usd(charged),
            "refunded_usd": usd(refunded),
            "adjusted_usd": usd(adjusted),
            "net_usd": usd(charged + adjusted - refunded),
            "charges": sum(self.charges.values()),
            "refunds": sum(self.refunds.values()),
            "per_model": self._per_model(),
            "per_task": {task_id: self._task(b) for task_id, b in self.tasks.items()},
        }

    @staticmethod
    def _task(bill: TaskBill) -> dict[str, str]:
        return {"model": bill.model, "charged_usd": usd(bill.charged), "refunded_usd": usd(bill.refunded),
                "adjusted_usd": usd(bill.adjusted), "net_usd": usd(bill.net),
                "refund_reason": bill.refund_reason}  # fmt: skip

    def _per_model(self) -> dict[str, dict[str, Any]]:
        totals: dict[str, list[int]] = {}
        for bill in self.tasks.values():
            charged, refunded, adjusted = totals.setdefault(bill.model, [0, 0, 0])
            totals[bill.model] = [charged + bill.charged, refunded + bill.refunded, adjusted + bill.adjusted]
        return {
            model: {"charges": self.charges[model], "refunds": self.refunds[model],
                    "charged_usd": usd(c), "refunded_usd": usd(r), "adjusted_usd": usd(a),
                    "net_usd": usd(c + a - r)}
            for model, (c, r, a) in totals.items()
        }  # fmt: skip


def pricing_answer() -> dict[str, Any]:
    """new-api's ``GET /api/pricing``: every task model as a fixed price per call (quota_type 1)."""
    rows = [
        {"model_name": model, "quota_type": 1, "model_ratio": 0, "model_price": float(price),
         "completion_ratio": 1, "enable_groups": ["default"], "supported_endpoint_types": []}
        for model, price in TASK_PRICES.items()
    ]  # fmt: skip
    return {"success": True, "message": "", "data": rows, "group_ratio": {"default": 1},
            "usable_group": {"default": "默认分组"}}  # fmt: skip
