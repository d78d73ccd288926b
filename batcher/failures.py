"""What failed in a job and what to do about it: ``batcher errors`` and the failure lines of ``status``.

The next step of a group follows from its HTTP status and error code (``next_step``, a pure rule
table): a line that failed on a passing fault is retried; a line the API refused as invalid is
fixed in the input; a key or model problem is fixed in the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jobs import store as q
from jobs.db import Store
from jobs.store import FailureGroup

_TRANSIENT_CODES = {
    "rate_limited", "server_error", "timeout", "connection", "bad_body", "request_timeout",
    "conflict", "max_attempts",
}  # fmt: skip
_KEY_CODES = {"auth", "quota", "invalid_api_key", "invalid_token", "insufficient_quota"}
_MODEL_CODES = {"not_found", "model_not_found"}


class Remedy(StrEnum):
    """The kind of next step for a group of failed lines."""

    RETRY = "retry"  # a passing fault: run the lines again
    FIX_INPUT = "fix_input"  # the API refused the lines as they are
    CHECK_KEY = "check_key"  # the key, its quota or its access to the model
    CHECK_MODEL = "check_model"  # the model or endpoint is not offered by this relay
    INSPECT = "inspect"  # lines that crashed their worker


@dataclass(frozen=True)
class Advice:
    """What to do about one group of failed lines."""

    remedy: Remedy
    text: str


def remedy_for(code: str | None, status: int | None) -> Remedy:
    """The kind of next step for a failure code and HTTP status."""
    if code == "poison_line":
        return Remedy.INSPECT
    if code in _KEY_CODES or status in (401, 403):
        return Remedy.CHECK_KEY
    if code in _MODEL_CODES or status == 404:
        return Remedy.CHECK_MODEL
    if code in _TRANSIENT_CODES or status in (408, 409, 429) or (status or 0) >= 500 or status is None:
        return Remedy.RETRY
    return Remedy.FIX_INPUT


def next_step(group: FailureGroup, job_id: int) -> Advice:
    """The next step for a group, with the commands to run."""
    remedy = remedy_for(group.code, group.status_code)
    again = f"`batcher retry {job_id}`, then `batcher run-job {job_id}` (or `batcher resume {job_id}`)"
    texts = {
        Remedy.RETRY: f"a passing fault that outlasted --max-attempts: {again}"
        + (", with a lower --rpm" if group.status_code == 429 or group.code == "rate_limited" else ""),
        Remedy.FIX_INPUT: "the API refused these lines as written: fix them in the input "
        f"(`batcher export {job_id} -o ok.jsonl --errors failed.jsonl` writes them out) "
        "and submit the fixed ones",
        Remedy.CHECK_KEY: f"check OPENAI_API_KEY, its quota and its access to the model; then {again}",
        Remedy.CHECK_MODEL: "the relay does not offer this model or endpoint: fix `model` in the input "
        "(or --model) and submit again",
        Remedy.INSPECT: "these lines crashed their worker every time: see the worker logs, "
        "then fix or drop them",
    }
    return Advice(remedy, texts[remedy])


@dataclass(frozen=True)
class AdvisedGroup:
    """A group of failed lines and what to do about it."""

    failure: FailureGroup
    advice: Advice


@dataclass(frozen=True)
class ErrorReport:
    """A job's failed lines, grouped, with the next step of each group."""

    job_id: int
    failed: int
    groups: list[AdvisedGroup]

    @property
    def shown(self) -> int:
        """Failed lines in the groups shown (fewer than ``failed`` past ``--limit``)."""
        return sum(g.failure.count for g in self.groups)


def error_report(store: Store, job_id: int, *, limit: int) -> ErrorReport:
    """The ``limit`` largest groups of the job's failed lines, with their next steps."""
    with store.session() as session:
        job = q.get_job(session, job_id)
        groups = q.failure_groups(session, job_id, limit=limit)
    return ErrorReport(job_id, job.failed, [AdvisedGroup(g, next_step(g, job_id)) for g in groups])


def render_errors(report: ErrorReport) -> str:
    """The groups as text: count, code and status, message, first lines, next step."""
    if not report.groups:
        return f"job {report.job_id}: no failed lines"
    parts = [f"job {report.job_id}: {report.failed} failed lines"]
    for g in report.groups:
        f = g.failure
        status = f" (HTTP {f.status_code})" if f.status_code is not None else ""
        first = ", ".join(f"{line.custom_id} (line {line.line})" for line in f.first)
        more = f" and {f.count - len(f.first)} more" if f.count > len(f.first) else ""
        parts.append(
            f"{f.count} × {f.code or 'unknown'}{status}: {f.message or ''}\n"
            f"  lines: {first}{more}\n  next: {g.advice.text}"
        )
    if report.shown < report.failed:
        parts.append(f"{report.failed - report.shown} more failed lines in other groups: raise --limit")
    return "\n\n".join(parts)


def errors_json(report: ErrorReport) -> dict[str, object]:
    """The groups as data for ``--json``."""
    groups = [
        {
            "code": g.failure.code, "status_code": g.failure.status_code, "message": g.failure.message,
            "count": g.failure.count,
            "first": [{"custom_id": x.custom_id, "line": x.line} for x in g.failure.first],
            "remedy": g.advice.remedy.value, "next_step": g.advice.text,
        }
        for g in report.groups
    ]  # fmt: skip
    return {"job_id": report.job_id, "failed": report.failed, "groups": groups}
