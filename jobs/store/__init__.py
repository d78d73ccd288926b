"""The SQL store's queries: every function takes ``session`` and returns models or records.

Transactions belong to the caller (``Store.session()``). One module per concern: ``jobs`` (jobs
and operations on whole jobs), ``lines`` (claims, leases, what the broker should carry),
``results`` (attempts and results written), ``usage`` (usage read back, as typed rows),
``exports`` (lines as an export reads them), ``pace`` (the paces jobs found) and ``dashboard``
(aggregates and pages the web dashboard reads). Callers use
``from jobs import store as q``.
"""

from __future__ import annotations

from jobs.store.calls import known_calls
from jobs.store.cleanup import JobFootprint, delete_jobs, footprint, jobs_older_than
from jobs.store.dashboard import (
    FailedRow,
    JobPage,
    LineDetail,
    TimeBucket,
    failed_lines,
    last_attempt_before,
    line_detail,
    model_usage,
    page_of_jobs,
    running_lines,
    timeline,
)
from jobs.store.executors import calls_in_flight, forget_executor, report_in_flight
from jobs.store.exports import LINE_COLUMNS, ResultPage, iter_result_pages, iter_results
from jobs.store.failures import FailedLine, FailureGroup, failure_groups, failures_by_code
from jobs.store.files import AudioFiles, audio_files, audio_paths
from jobs.store.jobs import (
    active_jobs,
    cancel_job,
    cancel_left,
    complete_if_done,
    create_job,
    fail_overclaimed,
    find_job_by_source,
    get_job,
    iter_lines,
    job_options,
    list_jobs,
    options_of,
    retry_failed,
    set_job_status,
    set_status,
    start_job,
    state_counts,
    update_options,
)
from jobs.store.lines import (
    claim_lines,
    expire_leases,
    insert_requests,
    lease_owners,
    mark_enqueued,
    release_lines,
    release_owners,
    renew_leases,
    unqueued_lines,
)
from jobs.store.pace import learned_paces, save_pace
from jobs.store.results import (
    RecentCalls,
    job_models,
    recent_calls,
    record_attempts,
    record_outcomes,
    record_results,
)
from jobs.store.usage import (
    CallRow,
    JobUsage,
    ModelUsage,
    iter_calls,
    usage_by_model,
    usage_totals,
)

__all__ = [
    "LINE_COLUMNS",
    "AudioFiles",
    "CallRow",
    "FailedLine",
    "FailedRow",
    "FailureGroup",
    "JobFootprint",
    "JobPage",
    "JobUsage",
    "LineDetail",
    "ModelUsage",
    "RecentCalls",
    "ResultPage",
    "TimeBucket",
    "active_jobs",
    "audio_files",
    "audio_paths",
    "calls_in_flight",
    "cancel_job",
    "cancel_left",
    "claim_lines",
    "complete_if_done",
    "create_job",
    "delete_jobs",
    "expire_leases",
    "fail_overclaimed",
    "failed_lines",
    "failure_groups",
    "failures_by_code",
    "find_job_by_source",
    "footprint",
    "forget_executor",
    "get_job",
    "insert_requests",
    "iter_calls",
    "iter_lines",
    "iter_result_pages",
    "iter_results",
    "job_models",
    "job_options",
    "jobs_older_than",
    "known_calls",
    "last_attempt_before",
    "learned_paces",
    "lease_owners",
    "line_detail",
    "list_jobs",
    "mark_enqueued",
    "model_usage",
    "options_of",
    "page_of_jobs",
    "recent_calls",
    "record_attempts",
    "record_outcomes",
    "record_results",
    "release_lines",
    "release_owners",
    "renew_leases",
    "report_in_flight",
    "retry_failed",
    "running_lines",
    "save_pace",
    "set_job_status",
    "set_status",
    "start_job",
    "state_counts",
    "timeline",
    "unqueued_lines",
    "update_options",
    "usage_by_model",
    "usage_totals",
]
