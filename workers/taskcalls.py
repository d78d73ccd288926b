"""One task call's meaning: what a submit answer or a poll answer decides for its lines. Pure.

A submit ends in one of four ways (``SubmitOutcome``):

- ``TAKEN``: the relay gave a task id; it is stored before anything else happens;
- ``LATER``: refused for now and nothing was charged (MJ code 23, a 429, a 5xx, a connection
  that was refused before the request left): tried again after a backoff;
- ``REFUSED``: refused for good (MJ code 24, a bad body, a code 4): the line fails;
- ``UNKNOWN``: sent, and no answer came (a timeout, a dropped connection, or a proxy's own 502 /
  504 / 524 page instead of the relay's answer): the relay may have charged and started the
  task. It is never sent again by itself (``UNKNOWN_MESSAGE``). A 5xx in the relay's own JSON
  envelope is the relay's answer (new-api refunds a failed submit at once): "later".
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from jobs.store.jobs import SUBMIT_UNKNOWN
from workers.client import NoAnswer, RawResponse
from workers.endpoints.taskfamily import Submitted, TaskFamily, json_or_none
from workers.retry import Classification, Verdict, classify_response

UNKNOWN_MESSAGE = (
    "submit outcome unknown: check the relay's task list, or `batcher retry --unknown JOB` to submit again"
)
UNKNOWN_CODE = SUBMIT_UNKNOWN
OTHER_RATIOS = "X-New-Api-Other-Ratios"
DEFAULT_POLL_INTERVAL_S = 15.0  # new-api refreshes its task rows every 15 s: faster polls see nothing new


# A proxy's "the server behind did not answer in time / answered badly" (Cloudflare's 524 too).
_PROXY_CUT = frozenset({502, 504, 524})
# The relay's "no quota left" in its MJ and task envelopes (HTTP 400 / 403): the job stops, no line fails.
_NO_QUOTA = (b"quota_not_enough", b"insufficient_user_quota")


class SubmitKind(StrEnum):
    """How a submit ended; see the module docstring."""

    TAKEN = "taken"
    LATER = "later"
    REFUSED = "refused"
    UNKNOWN = "unknown"
    FATAL = "fatal"  # the key or the quota: the job stops


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """A submit's meaning: the task id when taken, else the reason."""

    kind: SubmitKind
    task_id: str | None = None
    reason: str = ""
    modal: bool = False
    classification: Classification | None = None
    calls: float | None = None  # the relay's other ratios multiplied (``X-New-Api-Other-Ratios``)


def submit_outcome(
    family: TaskFamily, answer: RawResponse | NoAnswer, *, now: float | None = None
) -> SubmitOutcome:
    """What a submit's answer (or its absence) means; see the module docstring."""
    if isinstance(answer, NoAnswer):
        c = answer.classification
        if c.sent is False:
            return SubmitOutcome(SubmitKind.LATER, reason=c.message, classification=c)
        return SubmitOutcome(SubmitKind.UNKNOWN, reason=UNKNOWN_MESSAGE, classification=c)
    if answer.status >= 300:
        c = classify_response(answer.status, answer.headers, answer.content, now=now or time.time())
        if cut_by_a_proxy(answer):
            return SubmitOutcome(SubmitKind.UNKNOWN, reason=UNKNOWN_MESSAGE, classification=c)
        if c.verdict is Verdict.FATAL or any(code in answer.content for code in _NO_QUOTA):
            return SubmitOutcome(SubmitKind.FATAL, reason=c.message, classification=c)
        later = c.verdict is Verdict.RETRY or c.throttle is not None
        kind = SubmitKind.LATER if later else SubmitKind.REFUSED
        return SubmitOutcome(
            kind,
            reason=family.read_submit(answer.status, answer.content).refusal or c.message,
            classification=c,
        )
    return _read(family.read_submit(answer.status, answer.content), other_ratios(answer.headers))


def cut_by_a_proxy(answer: RawResponse) -> bool:
    """A gateway timeout or bad gateway that is not the relay's own answer (no JSON envelope: an
    nginx or Cloudflare page): the relay behind may have taken and charged the task."""
    return answer.status in _PROXY_CUT and not isinstance(json_or_none(answer.content), dict)


def other_ratios(headers: Mapping[str, str]) -> float | None:
    """The product of the billing ratios new-api sends with a video submit, or None without them."""
    ratios = json_or_none(headers.get(OTHER_RATIOS, "").encode())
    if not isinstance(ratios, dict) or not ratios:
        return None
    values = [v for v in ratios.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return math.prod(values) if len(values) == len(ratios) else None


def _read(submitted: Submitted, calls: float | None) -> SubmitOutcome:
    if submitted.task_id is not None:
        return SubmitOutcome(SubmitKind.TAKEN, submitted.task_id, modal=submitted.modal, calls=calls)
    kind = SubmitKind.LATER if submitted.later else SubmitKind.REFUSED
    return SubmitOutcome(kind, reason=submitted.refusal or "refused")


def later_delay(tries: int, *, jitter: float) -> float:
    """Seconds before a submit refused for now goes again: 5 s doubling to 5 min, jittered."""
    return float(min(300.0, 5.0 * 2.0 ** max(0, tries - 1)) * (0.5 + jitter / 2))
