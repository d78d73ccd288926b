"""Learned paces: the limits a job starts with, and the pace it leaves for the next job.

Without ``--rpm`` the pace is found from the relay's answers (``workers.aimd``). What a run found
for a (provider, model) is stored as it ends; the next job on that pair starts from it instead of
finding it again, and never above its own ``--rpm``.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobs import store as q
from jobs.db import Store
from jobs.options import JobOptions
from workers.ratelimit import Limits, PaceView


def job_limits(store: Store, provider: str, options: JobOptions) -> Limits:
    """The job's limits, with the paces learned on this provider as the starting points."""
    with store.session() as session:
        learned = q.learned_paces(session, provider)
    return Limits(
        rpm=options.rpm,
        tpm=options.tpm,
        learned={f"{provider}|{model}": rps for model, rps in learned.items()},
    )


def remember_paces(store: Store, views: Mapping[str, PaceView]) -> None:
    """Store the paces a run found (not the ones it was told: ``--rpm`` is the job's, not the relay's)."""
    found = {key: view.rate for key, view in views.items() if view.learned and view.rate}
    if not found:
        return
    with store.session() as session:
        for key, rate in found.items():
            provider, _, model = key.partition("|")
            q.save_pace(session, provider, model, rate)
