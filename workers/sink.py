"""The execution core's window onto the SQL store for one job (see ``workers.executor.Sink``)."""

from __future__ import annotations

from collections.abc import Sequence

from jobs import store as q
from jobs.db import Store
from jobs.models import JobStatus
from jobs.records import AttemptRecord, LineResult

_HALTING = {
    JobStatus.PAUSED: "job paused",
    JobStatus.CANCELLED: "job cancelled",
    JobStatus.STOPPED: "job stopped",
}


class StoreSink:
    """Writes one job's attempts and results, and reads whether the job may go on."""

    def __init__(self, store: Store, *, job_id: int, owner: str) -> None:
        self.store, self.job_id, self.owner = store, job_id, owner

    def write(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> None:
        """Record attempts and terminal results in one transaction; complete the job when done."""
        with self.store.session() as session:
            if q.record_outcomes(session, attempts, results):
                q.complete_if_done(session, self.job_id)

    def renew(self, request_ids: Sequence[int], until: float) -> None:
        """Extend this executor's leases."""
        with self.store.session() as session:
            q.renew_leases(session, request_ids, owner=self.owner, until=until)

    def release(self, request_ids: Sequence[int]) -> None:
        """Give lines back to pending; those of a cancelled job become cancelled instead."""
        with self.store.session() as session:
            q.release_lines(session, request_ids, owner=self.owner)
            q.cancel_left(session, self.job_id)

    def halt_reason(self) -> str | None:
        """Why the job should start no new call, from its status in the store (read without
        waiting for the write lock: every control tick asks, often while a flush holds it)."""
        with self.store.reading() as session:
            job = q.get_job(session, self.job_id)
            return _HALTING.get(JobStatus(job.status))

    def report_in_flight(self, calls: int | None) -> None:
        """Write this executor's calls in flight for ``status`` (None: it ended, forget it)."""
        with self.store.session() as session:
            if calls is None:
                q.forget_executor(session, self.owner)
            else:
                q.report_in_flight(session, owner=self.owner, job_id=self.job_id, calls=calls)

    def pause_job(self, message: str) -> None:
        """Pause the job with the reason (its budget is reached)."""
        with self.store.session() as session:
            job = q.get_job(session, self.job_id)
            if job.status == JobStatus.RUNNING:
                q.set_job_status(session, job, JobStatus.PAUSED, error=message)

    def stop_job(self, message: str) -> None:
        """Mark the job stopped with the API's reason."""
        with self.store.session() as session:
            job = q.get_job(session, self.job_id)
            q.set_job_status(session, job, JobStatus.STOPPED, error=message)
