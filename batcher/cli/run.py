"""Commands that read an input file and run it: ``run``, ``submit``, ``validate``, ``run-job``."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from batcher.cli.base import EXIT_ERROR, EXIT_PARTIAL, App, DomainError, cli, pass_app
from batcher.cli.options import (
    budget_option,
    ingest_options,
    job_argument,
    job_options,
    json_option,
    metrics_option,
    read_opts,
    reader_options,
    run_flags,
    run_options,
)
from batcher.estimate import EstimateBuilder, estimate_file
from batcher.export import ExportSummary, audio_note, export_job
from batcher.ingest import IngestOptions, IngestResult, ingest_file
from batcher.progress import Progress
from batcher.provider_report import served_catalog
from batcher.reader import read_requests
from batcher.render import printable, to_json
from batcher.runner import RunSummary, describe_stop, run_job
from jobs import store as q
from jobs.errors import BatcherError, Problem
from jobs.models import JobStatus
from jobs.options import JobOptions
from workers.catalog import ModelCatalog
from workers.client import NO_KEY_WARNING, client_config
from workers.prices import load_prices


def check_api(app: App) -> None:
    """Refuse a missing base URL before anything is stored; warn when no key is configured."""
    client_config(app.settings)
    if not any(p.present_keys() for p in app.settings.providers()):
        click.echo(NO_KEY_WARNING, err=True)


def served_models(app: App) -> ModelCatalog | None:
    """The models the providers serve, for ingest to check every line against (None: not checked)."""
    if not app.settings.base_url and app.settings.config_path() is None:
        return None  # `submit --no-queue` with no relay configured yet: nothing to ask
    catalog, notes = served_catalog(app.settings.providers(), client_config(app.settings))
    for note in notes:
        click.echo(note, err=True)
    return catalog


def _ingest(
    app: App, file: Path, kw: dict[str, Any], estimate: EstimateBuilder | None = None
) -> IngestResult:
    """Store the file as a job; with ``estimate``, ingest also adds up its cost in the same read."""
    options = IngestOptions(
        estimate=estimate,
        read=read_opts(kw),
        skip_invalid=kw["skip_invalid"],
        rejects_path=kw.get("rejects"),
        new=kw["new"],
        name=kw.get("name"),
        job_options=job_options(kw),
        priority=kw.get("priority", 5),
        blob_dir=app.settings.blob_dir,
        catalog=served_models(app),
    )
    return ingest_file(app.store, file, options)


def raise_budget(app: App, job_id: int, budget: Decimal | None) -> None:
    if budget is not None:
        with app.store.session() as session:
            q.update_options(session, job_id, budget=budget)


def _run_opts(app: App, job_id: int, kw: dict[str, Any]) -> JobOptions:
    """Flags win over the options stored with the job, which win over the defaults."""
    with app.store.session() as session:
        return q.job_options(session, job_id).merged(**run_flags(kw))


def _say_ingested(result: IngestResult) -> None:
    job = result.job
    if not result.created:
        click.echo(
            f"{job.source_path} was already submitted as job {job.id}; using it (--new makes another).",
            err=True,
        )
        return
    click.echo(f"job {job.id}: stored {result.stored} lines from {job.name}", err=True)
    if result.rejected:
        click.echo(f"skipped {result.rejected} invalid lines; see {result.rejects_path}", err=True)


def say_exported(summary: ExportSummary, output: Path, errors: Path | None) -> None:
    """What an export wrote, where the audio files are, and what it left out."""
    click.echo(f"wrote {summary.written} lines to {output}", err=True)
    if errors:
        click.echo(f"wrote {summary.errors_written} failed lines to {errors}", err=True)
    note = audio_note(summary.audio)
    if note:
        click.echo(note, err=True)
    if summary.unfinished:
        click.echo(f"{summary.unfinished} lines are not finished yet and were not exported", err=True)


def _execute(app: App, job_id: int, options: JobOptions) -> RunSummary:
    with app.store.session() as session:
        job = q.get_job(session, job_id)
    progress = Progress(
        total=job.total,
        already_done=job.succeeded + job.failed + job.cancelled,
        already_failed=job.failed,
        label=f"job {job_id}",
        plain_every=app.settings.progress_interval,
    )
    try:
        return run_job(app.store, app.settings, job_id, options, on_start=progress.attach)
    finally:
        progress.close()


def _finish(app: App, summary: RunSummary, *, failed_in: Path | None = None) -> None:
    """The run's last line; a stopped job is an error, failed lines exit 3 saying where they are."""
    job, counts = summary.job, summary.counts
    click.echo(
        f"job {job.id} {job.status}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['pending'] + counts['running']} left; {summary.stats.calls} calls",
        err=True,
    )
    if job.status == JobStatus.CANCELLED:
        raise DomainError(
            f"job {job.id} was cancelled: {counts['cancelled']} lines did not run "
            '(exported with the error "cancelled")'
        )
    if job.status not in (JobStatus.COMPLETED, JobStatus.RUNNING):
        raise DomainError(
            describe_stop(job, app.settings.secret_values()) + f"; resume with `batcher run-job {job.id}`"
        )
    if counts["failed"]:
        where = f'they are in {failed_in} with an "error"; ' if failed_in else ""
        click.echo(
            f"{counts['failed']} lines failed: {where}`batcher errors {job.id}` groups them with next steps",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_PARTIAL)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Results file (default FILE.results.jsonl)."
)
@click.option("--errors", type=click.Path(path_type=Path), help="Write failed lines here instead.")
@ingest_options
@run_options
@metrics_option
@pass_app
def run(app: App, /, file: Path, output: Path | None, errors: Path | None, **kw: Any) -> None:
    """Validate, store and run FILE in this process, then export the results.

    The embedded default: no Redis or workers needed. Exit code 3 means the job
    completed with some failed lines (they are in the results with an "error").

    \b
    Example:
      batcher run requests.jsonl -o results.jsonl --rpm 500 --max-in-flight 64
      batcher run big.jsonl --metrics-port 9464     # Prometheus scrapes :9464/metrics
    """
    check_api(app)
    serve_metrics(kw.pop("metrics_port"))
    result = _ingest(app, file, kw)
    _say_ingested(result)
    assert result.job.id is not None
    _remember_outputs(app, result.job.id, output or file.with_name(file.stem + ".results.jsonl"), errors)
    summary = _execute(app, result.job.id, _run_opts(app, result.job.id, kw))
    _finish(app, summary, failed_in=_export_stored(app, result.job.id))


def serve_metrics(port: int | None) -> None:
    """Serve this process's Prometheus metrics on ``port`` (none: metrics stay off)."""
    if port is None:
        return
    from workers.metrics import DEFAULT_HOST, HOST_ENV, serve

    host = os.environ.get(HOST_ENV, DEFAULT_HOST)
    try:
        serve(port, host)
    except OSError as exc:
        raise DomainError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}; choose another --metrics-port"
        ) from None
    click.echo(f"metrics on http://{host}:{port}/metrics", err=True)


def _remember_outputs(app: App, job_id: int, output: Path | None, errors: Path | None) -> None:
    """Store where results go, so `run-job` rewrites the same files when the job goes on."""
    with app.store.session() as session:
        q.update_options(
            session,
            job_id,
            output=output and str(output.resolve()),
            errors_output=errors and str(errors.resolve()),
        )


def _export_stored(app: App, job_id: int) -> Path | None:
    """Export to the files stored with the job (if any); return where the failed lines are."""
    with app.store.session() as session:
        options = q.job_options(session, job_id)
    if options.output is None:
        return None
    output, errors = Path(options.output), Path(options.errors_output) if options.errors_output else None
    say_exported(export_job(app.store, job_id, output, errors=errors), output, errors)
    return errors or output


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@ingest_options
@run_options
@click.option("--no-queue", is_flag=True, help="Only store the job; run it later with `run-job` or `resume`.")
@click.option(
    "--priority", type=click.IntRange(0, 9), default=5, show_default=True, help="0 runs first, 9 last."
)
@click.option(
    "--no-balance-check", is_flag=True, help="Skip comparing the estimate with the relay's balance."
)
@click.option("--dry-run", is_flag=True, help="Only validate and estimate tokens and cost; store nothing.")
@json_option
@pass_app
def submit(
    app: App,
    /,
    file: Path,
    *,
    no_queue: bool,
    priority: int,
    no_balance_check: bool,
    dry_run: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Validate FILE, store it as a job and enqueue it for the workers.

    Run options given here are stored with the job. If the broker cannot be reached,
    the job stays stored: start Redis and `batcher resume JOB`, or run it here with
    `batcher run-job JOB`.

    \b
    Example:
      batcher submit requests.jsonl --rpm 500 --priority 2
      batcher worker --processes 4      # on any machine with the same settings
    """
    if dry_run:
        _dry_run(file, kw, as_json=as_json)
        return
    check_balance = not no_balance_check and bool(app.settings.base_url)
    builder = EstimateBuilder(load_prices(kw.get("price_files") or ()), group=kw.get("group"))
    result = _ingest(app, file, kw | {"priority": priority}, builder if check_balance else None)
    assert result.job.id is not None
    if not as_json:
        _say_ingested(result)
    enqueued = None if no_queue or not result.created else enqueue(app, result.job.id)
    if as_json:
        data: dict[str, Any] = {"job_id": result.job.id, "created": result.created, "stored": result.stored}
        data |= {"rejected": result.rejected, "rejects_path": _str(result.rejects_path), "enqueued": enqueued}
        click.echo(to_json(data))
        return
    if enqueued is not None:
        click.echo(f"enqueued {enqueued} lines for the workers", err=True)
    if result.created and result.estimate is not None:
        _warn_over_balance(app, result.estimate.cost)
    click.echo(result.job.id)


def _dry_run(file: Path, kw: dict[str, Any], *, as_json: bool) -> None:
    """What `submit` would cost: the same estimate as `batcher estimate`, and nothing stored."""
    from batcher.cli.usage import estimate_json, estimate_text

    result = estimate_file(file, read_opts(kw), load_prices(kw.get("price_files") or ()), kw.get("group"))
    click.echo(estimate_json(result) if as_json else estimate_text(result))
    click.echo("dry run: nothing was stored", err=True)


def _warn_over_balance(app: App, cost: Decimal) -> None:
    """Warn when the job's estimate (from ingest's read) passes the relay's balance; a relay
    without one says so."""
    from batcher.balance import fetch_balance

    try:
        balance = fetch_balance(client_config(app.settings))
    except BatcherError as exc:
        click.echo(f"note: balance not checked: {exc}", err=True)
        return
    if cost > balance.remaining_usd:
        click.echo(
            f"warning: this job's estimate (${cost:.2f}) is more than the relay's balance "
            f"(${balance.remaining_usd:.2f}); top up, or set --budget to pause it in time",
            err=True,
        )


def enqueue(app: App, job_id: int) -> int:
    from workers.dispatch import celery_publisher, start_distributed

    client = app.broker_redis()
    try:
        return start_distributed(app.store, job_id, celery_publisher(), client).enqueued
    finally:
        client.close()


def _str(value: Path | None) -> str | None:
    return str(value) if value else None


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reader_options
@click.option("--rejects", type=click.Path(path_type=Path), help="Also write the problems as JSONL here.")
def validate(file: Path, rejects: Path | None, **kw: Any) -> None:
    """Check FILE without storing anything; print every problem with its line.

    \b
    Example:
      batcher validate requests.jsonl
    """
    valid, problems = 0, 0
    out = rejects.open("w", encoding="utf-8") if rejects else None
    try:
        for item in read_requests(file, read_opts(kw)):
            if isinstance(item, Problem):
                problems += 1
                click.echo(printable(str(item)))
                if out:
                    out.write(
                        json.dumps({"line": item.line, "error": item.message}, ensure_ascii=False) + "\n"
                    )
            else:
                valid += 1
    finally:
        if out:
            out.close()
    click.echo(f"{file}: {valid} valid lines, {problems} invalid", err=True)
    if problems:
        raise click.exceptions.Exit(EXIT_ERROR)
    if not valid:
        raise DomainError(f"{file} has no request lines: `batcher run` would refuse it")


@cli.command("run-job")
@job_argument
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Results file [default: the job's, if any]."
)
@click.option("--errors", type=click.Path(path_type=Path), help="Write failed lines here instead.")
@run_options
@budget_option
@metrics_option
@pass_app
def run_job_command(
    app: App, /, job_id: int, budget: Decimal | None, output: Path | None, errors: Path | None, **kw: Any
) -> None:
    """Run a stored job in this process; resumes where it stopped.

    A job started with `batcher run -o FILE` (or given -o here) has its results file
    written again at the end, so it is never stale.

    After `submit`, after a crash (lines a dead run held are taken back), or after
    fixing the key of a stopped job.

    \b
    Example:
      batcher run-job 3 --max-in-flight 64
    """
    check_api(app)
    serve_metrics(kw.pop("metrics_port"))
    raise_budget(app, job_id, budget)
    _remember_outputs(app, job_id, output, errors)
    summary = _execute(app, job_id, _run_opts(app, job_id, kw))
    _finish(app, summary, failed_in=_export_stored(app, job_id))
