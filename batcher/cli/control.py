"""Commands over stored jobs: jobs, status, export, retry, cancel, pause and resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from decimal import Decimal
from pathlib import Path

import click

from batcher.cli.base import App, cli, pass_app
from batcher.cli.options import budget_option, job_argument, json_option
from batcher.cli.run import enqueue, raise_budget, say_exported
from batcher.export import ExportFormat, export_job
from batcher.pace_status import take_pace
from batcher.render import job_dict, table, to_json
from batcher.status import Snapshot, Speed, StatusScreen, rates, render, take_snapshot
from jobs import store as q
from jobs.errors import BatcherError
from jobs.models import JobStatus
from workers.journal import journal_dir


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many jobs.")
@json_option
@pass_app
def jobs(app: App, limit: int, as_json: bool) -> None:
    """List jobs, newest first.

    \b
    Example:
      batcher jobs --limit 10
    """
    with app.store.session() as session:
        found = q.list_jobs(session, limit=limit)
    if as_json:
        click.echo(to_json([job_dict(j) for j in found]))
        return
    rows = [(j.id, j.name, j.status, j.total, j.succeeded, j.failed, j.created_at) for j in found]
    click.echo(table(("id", "name", "status", "lines", "succeeded", "failed", "created (UTC)"), rows))


@cli.command()
@job_argument
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until the job ends.")
@json_option
@pass_app
def status(app: App, job_id: int, watch: bool, as_json: bool) -> None:
    """Show a job's progress across all workers: lines by state, usage, speed.

    For jobs run by workers it also sweeps: lines of dead workers and lines whose
    messages the broker lost are enqueued again.

    \b
    Example:
      batcher status 3 --watch
    """
    if watch and not as_json:
        screen = StatusScreen()
        try:
            _refresh(app, job_id, watch=True, show=screen.show)
        finally:
            screen.close()
        return
    _refresh(app, job_id, watch=watch, show=_print_json if as_json else _print_text)


def _refresh(app: App, job_id: int, *, watch: bool, show: Callable[[Snapshot, Speed], None]) -> None:
    """Take a snapshot and show it; with ``watch``, every 2 s until the job ends."""
    before = None
    while True:
        settle_cancelled(app, job_id)
        _sweep_quietly(app, job_id)
        snap = take_snapshot(app.store, job_id)
        snap = replace(snap, pace=take_pace(app.store, app.settings, job_id))
        show(snap, rates(before, snap))
        if not watch or snap.job["status"] not in (JobStatus.QUEUED, JobStatus.RUNNING):
            return
        before = snap
        time.sleep(2)


def _print_text(snap: Snapshot, speed: Speed) -> None:
    click.echo(render(snap, speed))


def _print_json(snap: Snapshot, speed: Speed) -> None:
    data: dict[str, object] = {"counts": snap.counts, "usage": asdict(snap.usage), "speed": speed}
    data["failures"] = snap.failures
    data |= {"cost_usd": _str_or_none(snap.cost_usd), "calls_in_flight": snap.in_flight}
    data["pace"] = snap.pace.to_dict() if snap.pace is not None else None
    if snap.tasks is not None:
        data["tasks"] = snap.tasks.by_state | {"progress": snap.tasks.progress}
    click.echo(to_json(snap.job | data))


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def settle_cancelled(app: App, job_id: int) -> None:
    """A cancelled job's lines left over (given back, or of a dead worker) become cancelled."""
    with app.store.session() as session:
        q.cancel_left(session, job_id)


def _sweep_quietly(app: App, job_id: int) -> None:
    """Sweep a running worker job; a broker that is down only earns a warning here."""
    with app.store.session() as session:
        job = q.get_job(session, job_id)
    if job.mode != "celery" or job.status != JobStatus.RUNNING:
        return
    from workers.dispatch import celery_publisher, sweep_job, translate_broker_errors

    client = app.broker_redis()
    try:
        journals = journal_dir(app.settings.home)
        translate_broker_errors(
            lambda: sweep_job(app.store, job_id, celery_publisher(), client, journals=journals), client
        )
    except BatcherError as exc:
        click.echo(f"warning: {exc}", err=True)
    finally:
        client.close()


@cli.command()
@job_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option(
    "--format", "fmt", type=click.Choice([f.value for f in ExportFormat]), default="jsonl", show_default=True
)
@click.option("--errors", type=click.Path(path_type=Path), help="Write failed lines to this file instead.")
@pass_app
def export(app: App, job_id: int, output: Path, fmt: str, errors: Path | None) -> None:
    """Export a job's results in input order (OpenAI Batch output format, or CSV).

    \b
    Example:
      batcher export 3 -o results.jsonl --errors errors.jsonl
      batcher export 3 -o results.csv --format csv
    """
    settle_cancelled(app, job_id)
    summary = export_job(app.store, job_id, output, fmt=ExportFormat(fmt), errors=errors)
    say_exported(summary, output, errors)


@cli.command()
@job_argument
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many groups.")
@json_option
@pass_app
def errors(app: App, job_id: int, limit: int, as_json: bool) -> None:
    """Show a job's failed lines grouped by error, with the next step for each group.

    \b
    Example:
      batcher errors 3
      batcher errors 3 --limit 50 --json
    """
    from batcher.failures import error_report, errors_json, render_errors

    report = error_report(app.store, job_id, limit=limit)
    click.echo(to_json(errors_json(report)) if as_json else render_errors(report))


@cli.command()
@job_argument
@click.option(
    "--unknown", is_flag=True,
    help="Also task lines whose submit got no answer (the relay may have them: check its task list first).",
)  # fmt: skip
@pass_app
def retry(app: App, job_id: int, unknown: bool) -> None:
    """Put a job's failed lines back to pending; then `batcher run-job JOB`.

    \b
    Example:
      batcher retry 3 && batcher run-job 3
      batcher retry --unknown 3   # task submits that got no answer: submitted again
    """
    with app.store.session() as session:
        n = q.retry_failed(session, job_id, unknown=unknown)
    click.echo(f"job {job_id}: {n} failed lines are pending again")


@cli.command()
@job_argument
@pass_app
def cancel(app: App, job_id: int) -> None:
    """Cancel a job: no new calls; calls in flight may finish.

    \b
    Example:
      batcher cancel 3
    """
    with app.store.session() as session:
        n = q.cancel_job(session, job_id)
    click.echo(
        f'job {job_id} cancelled: {n} lines will not run (exported with the error "cancelled"); '
        "calls in flight may finish"
    )


@cli.command()
@job_argument
@pass_app
def pause(app: App, job_id: int) -> None:
    """Pause a job on every worker: no new calls until `batcher resume JOB`.

    \b
    Example:
      batcher pause 3
    """
    with app.store.session() as session:
        q.set_status(session, job_id, JobStatus.PAUSED, allowed=(JobStatus.QUEUED, JobStatus.RUNNING))
    click.echo(f"job {job_id} paused; calls in flight may finish")


@cli.command()
@job_argument
@budget_option
@json_option
@pass_app
def resume(app: App, job_id: int, budget: Decimal | None, as_json: bool) -> None:
    """Resume a paused or stopped job on the workers: enqueue every line left.

    \b
    Example:
      batcher resume 3
    """
    raise_budget(app, job_id, budget)
    enqueued = enqueue(app, job_id)
    if as_json:
        click.echo(to_json({"job_id": job_id, "enqueued": enqueued}))
    else:
        click.echo(f"job {job_id} running; enqueued {enqueued} lines")
