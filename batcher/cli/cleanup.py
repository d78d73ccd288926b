"""Commands that remove jobs: ``delete`` and ``prune``; both ask first unless ``--yes``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import click

from batcher.cleanup import PRUNE_STATUSES, DeleteSummary, delete, jobs_by_id, parse_age, prunable, size_of
from batcher.cli.base import App, cli, pass_app
from batcher.render import table
from jobs.errors import ConfigError
from jobs.models import Job, JobStatus

yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def age_param(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_age(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _confirm_and_delete(app: App, jobs: Sequence[Job], yes: bool) -> None:
    ids = [job.id for job in jobs if job.id is not None]
    size = size_of(app.store, ids)
    rows = [(j.id, j.name, j.status, j.total, j.created_at) for j in jobs]
    click.echo(table(("id", "name", "status", "lines", "created (UTC)"), rows), err=True)
    question = f"delete {size.jobs} jobs with {size.lines} lines, {size.attempts} attempts and their files?"
    if not yes:
        click.confirm(question, abort=True, err=True)
    _say_deleted(delete(app.store, ids, blob_dir=app.settings.blob_dir, results_dir=app.settings.results_dir))


def _say_deleted(done: DeleteSummary) -> None:
    size = done.footprint
    text = (
        f"deleted {size.jobs} jobs: {size.lines} lines, {size.attempts} attempts, {done.files_removed} files"
    )
    if done.files_missing:
        text += f"; {done.files_missing} result files were not on this machine (remove them where written)"
    click.echo(text, err=True)


@cli.command("delete")
@click.argument("job_ids", metavar="JOB...", nargs=-1, type=int, required=True)
@yes_option
@pass_app
def delete_command(app: App, job_ids: tuple[int, ...], yes: bool) -> None:
    """Delete jobs with their lines, attempts and result files; asks first.

    A running job is refused: pause or cancel it first.

    \b
    Example:
      batcher delete 3 4
      batcher delete 3 --yes
    """
    _confirm_and_delete(app, jobs_by_id(app.store, job_ids), yes)


@cli.command()
@click.option(
    "--older-than", required=True, callback=age_param, metavar="AGE",
    help="Jobs finished (or created, if never finished) longer ago than this: 30d, 12h, 2w, 90m.",
)  # fmt: skip
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus]),
    help="Only jobs in this status; repeatable [default: completed and cancelled].",
)  # fmt: skip
@yes_option
@pass_app
def prune(app: App, older_than: timedelta, statuses: tuple[str, ...], yes: bool) -> None:
    """Delete old jobs with their lines, attempts and result files; asks first.

    \b
    Example:
      batcher prune --older-than 30d
      batcher prune --older-than 7d --status completed --yes
    """
    chosen = [JobStatus(s) for s in statuses] or list(PRUNE_STATUSES)
    if JobStatus.RUNNING in chosen:
        raise click.BadParameter(
            "running jobs cannot be pruned; pause or cancel them first", param_hint="--status"
        )
    jobs = prunable(app.store, older_than, chosen)
    if not jobs:
        click.echo("no job to prune", err=True)
        return
    _confirm_and_delete(app, jobs, yes)
