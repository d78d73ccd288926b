"""The ``batcher`` command line: thin click commands over the library functions.

Each command parses its options, calls one library function and renders the result. A
``BatcherError`` becomes its message and exit code 1; usage errors exit 2 (click's own).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

from batcher.export import ExportFormat, export_job
from batcher.ingest import IngestOptions, IngestResult, ingest_file
from batcher.progress import Progress
from batcher.reader import ReadOptions, read_requests
from batcher.render import job_dict, table, to_json
from batcher.runner import RunOptions, RunSummary, describe_stop, run_job
from batcher.status import rates, render, take_snapshot
from batcher.usage_cli import estimate, usage
from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import BatcherError, Problem
from jobs.models import JobStatus
from jobs.settings import Settings, load_settings
from workers.client import client_config
from workers.redact import install_log_redaction

EXIT_OK = 0  # every line succeeded
EXIT_ERROR = 1  # a domain error: bad input, a stopped job, an unreachable service
EXIT_USAGE = 2  # click's code for a bad command line
EXIT_PARTIAL = 3  # the job completed but some lines failed: see the errors in the export

F = TypeVar("F", bound=Callable[..., Any])


class DomainError(click.ClickException):
    """A ``BatcherError`` shown as a clean message with exit code 1."""

    exit_code = EXIT_ERROR


class BatcherGroup(click.Group):
    """Turns ``BatcherError`` into a message and exit code 1 for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatcherError as exc:
            raise DomainError(str(exc)) from None


@dataclass
class App:
    """What commands share: the settings and, opened on first use, the store."""

    settings: Settings
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.effective_database_url)
        return self._store

    def close(self) -> None:
        """Release the store's connections (at the end of every command)."""
        if self._store is not None:
            self._store.close()

    def broker_redis(self) -> Any:
        """A client of the broker's Redis (dispatch bookkeeping); connects on first command."""
        import redis

        return redis.Redis.from_url(self.settings.broker_url, socket_connect_timeout=3, socket_timeout=10)


pass_app = click.make_pass_decorator(App)


@click.group(cls=BatcherGroup)
@click.version_option(package_name="batcher")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Batch job processor for OpenAI-compatible APIs and relays.

    \b
    Try it offline:
      batcher dev-relay &                      # a stand-in relay on 127.0.0.1:8765
      export OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-dev
      batcher run examples/chat.jsonl -o results.jsonl
    """
    try:
        settings = load_settings()
    except BatcherError as exc:
        raise DomainError(str(exc)) from None
    install_log_redaction(settings.secret_values())
    ctx.obj = App(settings)
    ctx.call_on_close(ctx.obj.close)


# --- shared options ---------------------------------------------------------------------------


def reader_options(func: F) -> F:
    """Options that say how to read an input file."""
    decorators = [
        click.option(
            "--endpoint",
            type=click.Choice([e.value for e in Endpoint]),
            help="Endpoint for bare request bodies (lines without custom_id/url/body).",
        ),
        click.option("--model", help="Model for bodies that name none."),
        click.option(
            "--max-line-bytes", type=click.IntRange(min=1), default=8 * 1024 * 1024, show_default=True,
            help="Reject lines longer than this.",
        ),
    ]  # fmt: skip
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


def _metadata(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        pairs[key.strip()] = text
    return pairs


budget_option = click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    help="Pause the job before its cost in USD would pass this.",
)


def ingest_options(func: F) -> F:
    """Options of ``submit`` and ``run`` about storing a file."""
    decorators = [
        reader_options,
        budget_option,
        click.option(
            "--prices",
            "price_files",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Price file(s) for --budget (batcher, LiteLLM or relay format).",
        ),
        click.option("--group", help="The relay group whose ratio applies to --budget (分组倍率)."),
        click.option("--tag", help="A tag for usage reports (`batcher usage --by tag`)."),
        click.option(
            "--metadata", multiple=True, callback=_metadata, help="KEY=VALUE for usage reports; repeatable."
        ),
        click.option(
            "--skip-invalid", is_flag=True, help="Store the valid lines; write the rest to a rejects file."
        ),
        click.option(
            "--rejects", type=click.Path(path_type=Path), help="Rejects file (default FILE.rejects.jsonl)."
        ),
        click.option("--new", is_flag=True, help="Make a new job even if this file was submitted before."),
        click.option("--name", help="A name for the job (default: the file name)."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


def run_options(func: F) -> F:
    """Options about how hard to push the API."""
    decorators = [
        click.option(
            "--concurrency", type=click.IntRange(min=1), help="Calls in flight at once [default: 32]."
        ),
        click.option("--rpm", type=click.FloatRange(min=0, min_open=True), help="Requests per minute limit."),
        click.option("--tpm", type=click.FloatRange(min=0, min_open=True), help="Tokens per minute limit."),
        click.option(
            "--max-attempts", type=click.IntRange(min=1), help="Calls per line at most [default: 5]."
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per call [default: 120]."
        ),
        click.option(
            "--pack/--no-pack", default=None, help="Pack embedding lines into shared calls [default: pack]."
        ),
        click.option(
            "--pack-size", type=click.IntRange(1, 2048), help="Inputs per packed call [default: 256]."
        ),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
job_argument = click.argument("job_id", metavar="JOB", type=int)
RUN_KEYS = ("concurrency", "rpm", "tpm", "max_attempts", "timeout", "pack", "pack_size")


def _read_opts(kw: dict[str, Any]) -> ReadOptions:
    endpoint = Endpoint(kw["endpoint"]) if kw.get("endpoint") else None
    return ReadOptions(endpoint=endpoint, model=kw.get("model"), max_line_bytes=kw["max_line_bytes"])


def _ingest(app: App, file: Path, kw: dict[str, Any]) -> IngestResult:
    options = IngestOptions(
        read=_read_opts(kw),
        skip_invalid=kw["skip_invalid"],
        rejects_path=kw.get("rejects"),
        new=kw["new"],
        name=kw.get("name"),
        job_options={k: kw[k] for k in RUN_KEYS if kw.get(k) is not None} | _accounting(kw),
        priority=kw.get("priority", 5),
    )
    return ingest_file(app.store, file, options)


def _accounting(kw: dict[str, Any]) -> dict[str, Any]:
    """Budget, prices, group, tag and metadata as the job stores them."""
    stored: dict[str, Any] = {}
    if kw.get("budget") is not None:
        stored["budget"] = str(Decimal(str(kw["budget"])))
    if kw.get("price_files"):
        stored["prices"] = [str(p.resolve()) for p in kw["price_files"]]
    for key in ("group", "tag"):
        if kw.get(key):
            stored[key] = kw[key]
    if kw.get("metadata"):
        stored["metadata"] = kw["metadata"]
    return stored


def _raise_budget(app: App, job_id: int, budget: float | None) -> None:
    if budget is not None:
        with app.store.session() as session:
            q.update_options(session, job_id, {"budget": str(Decimal(str(budget)))})


def _run_opts(app: App, job_id: int, kw: dict[str, Any]) -> RunOptions:
    """Flags win over the options stored with the job, which win over the defaults."""
    with app.store.session() as session:
        stored = json.loads(q.get_job(session, job_id).options or "{}")
    chosen = {k: kw[k] if kw.get(k) is not None else stored.get(k) for k in RUN_KEYS}
    return RunOptions(**{k: v for k, v in chosen.items() if v is not None})


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


def _execute(app: App, job_id: int, options: RunOptions) -> RunSummary:
    with app.store.session() as session:
        job = q.get_job(session, job_id)
    progress = Progress(total=job.total, already_done=job.succeeded + job.failed, already_failed=job.failed)
    try:
        return run_job(app.store, app.settings, job_id, options, on_start=progress.attach)
    finally:
        progress.close()


def _finish(app: App, summary: RunSummary) -> None:
    job, counts = summary.job, summary.counts
    click.echo(
        f"job {job.id} {job.status}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['pending'] + counts['running']} left; {summary.stats.calls} calls",
        err=True,
    )
    if job.status not in (JobStatus.COMPLETED, JobStatus.RUNNING):
        raise DomainError(
            describe_stop(job, app.settings.secret_values()) + f"; resume with `batcher run-job {job.id}`"
        )
    if counts["failed"]:
        raise click.exceptions.Exit(EXIT_PARTIAL)


# --- commands ---------------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Results file (default FILE.results.jsonl)."
)
@click.option("--errors", type=click.Path(path_type=Path), help="Write failed lines here instead.")
@ingest_options
@run_options
@pass_app
def run(app: App, /, file: Path, output: Path | None, errors: Path | None, **kw: Any) -> None:
    """Validate, store and run FILE in this process, then export the results.

    The embedded default: no Redis or workers needed. Exit code 3 means the job
    completed with some failed lines (they are in the results with an "error").

    \b
    Example:
      batcher run requests.jsonl -o results.jsonl --rpm 500 --concurrency 64
    """
    result = _ingest(app, file, kw)
    _say_ingested(result)
    assert result.job.id is not None
    summary = _execute(app, result.job.id, _run_opts(app, result.job.id, kw))
    output = output or file.with_name(file.stem + ".results.jsonl")
    exported = export_job(app.store, result.job.id, output, errors=errors)
    click.echo(f"wrote {exported.written} results to {output}", err=True)
    _finish(app, summary)


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
      batcher worker --concurrency 4     # on any machine with the same settings
    """
    if dry_run:
        _dry_run(file, kw, as_json=as_json)
        return
    result = _ingest(app, file, kw | {"priority": priority})
    assert result.job.id is not None
    if not as_json:
        _say_ingested(result)
    enqueued = None if no_queue or not result.created else _enqueue(app, result.job.id)
    if as_json:
        data: dict[str, Any] = {"job_id": result.job.id, "created": result.created, "stored": result.stored}
        data |= {"rejected": result.rejected, "rejects_path": _str(result.rejects_path), "enqueued": enqueued}
        click.echo(to_json(data))
        return
    if enqueued is not None:
        click.echo(f"enqueued {enqueued} lines for the workers", err=True)
    if result.created and not no_balance_check and app.settings.base_url:
        _warn_over_balance(app, file, kw)
    click.echo(result.job.id)


def _dry_run(file: Path, kw: dict[str, Any], *, as_json: bool) -> None:
    """What `submit` would cost: the same estimate as `batcher estimate`, and nothing stored."""
    from batcher.estimate import estimate_file
    from batcher.usage_cli import estimate_json, estimate_text
    from workers.prices import load_prices

    result = estimate_file(file, _read_opts(kw), load_prices(kw.get("price_files") or ()), kw.get("group"))
    click.echo(estimate_json(result) if as_json else estimate_text(result))
    click.echo("dry run: nothing was stored", err=True)


def _warn_over_balance(app: App, file: Path, kw: dict[str, Any]) -> None:
    """Warn when the job's estimate passes the relay's balance; a relay without one says so."""
    from batcher.balance import fetch_balance
    from batcher.estimate import estimate_file
    from workers.prices import load_prices

    try:
        balance = fetch_balance(client_config(app.settings))
    except BatcherError as exc:
        click.echo(f"note: balance not checked: {exc}", err=True)
        return
    book = load_prices(kw.get("price_files") or ())
    cost = estimate_file(file, _read_opts(kw), book, kw.get("group")).cost
    if cost > balance.remaining_usd:
        click.echo(
            f"warning: this job's estimate (${cost:.2f}) is more than the relay's balance "
            f"(${balance.remaining_usd:.2f}); top up, or set --budget to pause it in time",
            err=True,
        )


def _enqueue(app: App, job_id: int) -> int:
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
        for item in read_requests(file, _read_opts(kw)):
            if isinstance(item, Problem):
                problems += 1
                click.echo(str(item))
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


@cli.command("run-job")
@job_argument
@run_options
@budget_option
@pass_app
def run_job_command(app: App, /, job_id: int, budget: float | None, **kw: Any) -> None:
    """Run a stored job in this process; resumes where it stopped.

    After `submit`, after a crash (lines a dead run held are taken back), or after
    fixing the key of a stopped job.

    \b
    Example:
      batcher run-job 3 --concurrency 64
    """
    _raise_budget(app, job_id, budget)
    summary = _execute(app, job_id, _run_opts(app, job_id, kw))
    _finish(app, summary)


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
    before = None
    while True:
        _sweep_quietly(app, job_id)
        snap = take_snapshot(app.store, job_id)
        speed = rates(before, snap)
        if as_json:
            click.echo(to_json(snap.job | {"counts": snap.counts, "usage": snap.usage, "speed": speed}))
        else:
            click.echo(render(snap, speed))
        if not watch or snap.job["status"] not in (JobStatus.QUEUED, JobStatus.RUNNING):
            return
        before = snap
        time.sleep(2)
        click.echo()


def _sweep_quietly(app: App, job_id: int) -> None:
    """Sweep a running worker job; a broker that is down only earns a warning here."""
    with app.store.session() as session:
        job = q.get_job(session, job_id)
    if job.mode != "celery" or job.status != JobStatus.RUNNING:
        return
    from workers.dispatch import celery_publisher, sweep_job, translate_broker_errors

    client = app.broker_redis()
    try:
        translate_broker_errors(lambda: sweep_job(app.store, job_id, celery_publisher(), client), client)
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
    summary = export_job(app.store, job_id, output, fmt=ExportFormat(fmt), errors=errors)
    click.echo(f"wrote {summary.written} lines to {output}", err=True)
    if errors:
        click.echo(f"wrote {summary.errors_written} failed lines to {errors}", err=True)
    if summary.unfinished:
        click.echo(f"{summary.unfinished} lines are not finished yet and were not exported", err=True)


@cli.command()
@job_argument
@pass_app
def retry(app: App, job_id: int) -> None:
    """Put a job's failed lines back to pending; then `batcher run-job JOB`.

    \b
    Example:
      batcher retry 3 && batcher run-job 3
    """
    with app.store.session() as session:
        n = q.retry_failed(session, job_id)
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
    click.echo(f"job {job_id} cancelled; {n} pending lines will not run")


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
def resume(app: App, job_id: int, budget: float | None, as_json: bool) -> None:
    """Resume a paused or stopped job on the workers: enqueue every line left.

    \b
    Example:
      batcher resume 3
    """
    _raise_budget(app, job_id, budget)
    enqueued = _enqueue(app, job_id)
    if as_json:
        click.echo(to_json({"job_id": job_id, "enqueued": enqueued}))
    else:
        click.echo(f"job {job_id} running; enqueued {enqueued} lines")


@cli.command()
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes."
)
@click.option(
    "--queues",
    help="Endpoint kinds to serve, comma-separated (chat,completions,embeddings,speech) [default: all].",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int, queues: str | None, loglevel: str) -> None:
    """Start a Celery worker with batcher's settings (same as `celery -A workers.app worker`).

    Each process runs a chunk of lines at a time with hundreds of calls in flight; all
    workers share the Redis rate limiter. Needs BATCHER_BROKER_URL, BATCHER_DATABASE_URL
    and the provider settings.

    \b
    Example:
      batcher worker --concurrency 4 --queues embeddings,chat
    """
    from workers.app import QUEUE_PREFIX, app

    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}"]
    if queues:
        argv += ["-Q", ",".join(QUEUE_PREFIX + k.strip() for k in queues.split(",") if k.strip())]
    app.worker_main(argv)


@cli.command("dev-relay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--latency", type=float, default=0.05, show_default=True, help="Seconds added to each answer.")
@click.option(
    "--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of faulty calls."
)
@click.option("--rps-limit", type=int, default=0, help="Answer 429 past this many requests per second.")
@click.option("--api-key", help="Require this key (401 otherwise).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--faults",
    help="Fault kinds to draw from, comma-separated; repeat one to weigh it: 503,503,hang [default: all].",
)
@click.option("--hang-seconds", type=float, default=30.0, show_default=True, help="How long a hang lasts.")
@click.option("--retry-after", type=float, default=1.0, show_default=True, help="Retry-After of 429 faults.")
def dev_relay(host: str, port: int, faults: str | None, **kw: Any) -> None:
    """Run a stand-in relay on loopback, to try batcher without an API key.

    It answers chat, completions, embeddings and speech deterministically, and can
    inject faults (429, 5xx, hangs, resets, truncated JSON, errors inside 200).

    \b
    Example:
      batcher dev-relay --latency 0.2 --fault-rate 0.1
    """
    from batcher.devrelay import RelayConfig, run_forever

    if faults:
        kw["faults"] = tuple(k.strip() for k in faults.split(",") if k.strip())
    try:
        config = RelayConfig(**kw)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    run_forever(config, host=host, port=port)


@cli.command()
@json_option
@pass_app
def balance(app: App, as_json: bool) -> None:
    """Show the relay's balance: its limit, what was used and what is left (USD).

    From one-api / new-api's /v1/dashboard/billing endpoints.

    \b
    Example:
      batcher balance --json
    """
    from batcher.balance import fetch_balance

    found = fetch_balance(client_config(app.settings))
    data = {"limit_usd": found.limit_usd, "used_usd": found.used_usd, "remaining_usd": found.remaining_usd}
    if as_json:
        click.echo(to_json({k: str(v) for k, v in data.items()}))
    else:
        click.echo(table(("balance", "USD"), [(k.removesuffix("_usd"), f"{v:.2f}") for k, v in data.items()]))


cli.add_command(usage)
cli.add_command(estimate)


def main() -> None:
    """The console script."""
    cli(prog_name="batcher")
