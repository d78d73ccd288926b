"""Option bundles shared by several commands, as decorators, and how they map onto library options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click

from batcher.reader import ReadOptions
from jobs.endpoints import Endpoint
from jobs.options import CacheMode, JobOptions
from workers.endpoints import families
from workers.ratelimit import parse_reset

F = TypeVar("F", bound=Callable[..., Any])


def reader_options(func: F) -> F:
    """Options that say how to read an input file."""
    decorators = [
        click.option(
            "--endpoint",
            type=click.Choice([p for f in families() for p in f.paths]),
            help="Endpoint for bare request bodies (lines without custom_id/url/body).",
        ),
        click.option("--model", help="Model for bodies that name none."),
        click.option(
            "--stream", is_flag=True, default=False,
            help="Stream every call of a family that can (chat, completions, responses, messages).",
        ),
        click.option(
            "--max-line-bytes", type=click.IntRange(min=1), default=8 * 1024 * 1024, show_default=True,
            help="Reject lines longer than this.",
        ),
    ]  # fmt: skip
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


def parse_metadata(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        pairs[key.strip()] = text
    return pairs


def parse_usd(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    """An amount of US dollars above zero, kept exact as a ``Decimal`` (never a float)."""
    if value is None:
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        message = f"{value!r} is not an amount of USD, like 25 or 2.50"
        raise click.BadParameter(message, ctx, param) from None
    if not amount.is_finite() or amount <= 0:
        raise click.BadParameter(f"{value!r} is not above zero", ctx, param)
    return amount


budget_option = click.option(
    "--budget",
    metavar="USD",
    callback=parse_usd,
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
            "--metadata",
            multiple=True,
            callback=parse_metadata,
            help="KEY=VALUE for usage reports; repeatable.",
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


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, or a duration as ``90s``, ``30m``, ``1h``, ``1h30m``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        seconds = parse_reset(str(value))
        if seconds is None:
            self.fail(f"{value!r} is not a duration: write seconds or e.g. 90s, 30m, 1h", param, ctx)
        return seconds


def renamed(new: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback for an option's old name: it still works, and says what to use instead."""

    def warn(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            click.echo(f"warning: {param.opts[0]} is deprecated: use {new}", err=True)
        return value

    return warn


def _merge_alias(func: F) -> F:
    """Take the deprecated ``--concurrency`` of run commands as ``--max-in-flight``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        old = kw.pop("old_concurrency", None)
        if kw.get("concurrency") is None:
            kw["concurrency"] = old
        return func(*args, **kw)

    return wrapper  # type: ignore[return-value]


MAX_IN_FLIGHT_HELP = (
    "Most calls in flight at once (per process or worker chunk); the pace finds the number below "
    "it [default: 256]."
)


def run_options(func: F) -> F:
    """Options about how hard to push the API."""
    decorators = [
        click.option("--max-in-flight", "concurrency", type=click.IntRange(min=1), help=MAX_IN_FLIGHT_HELP),
        click.option(
            "--concurrency",
            "old_concurrency",
            type=click.IntRange(min=1),
            hidden=True,
            callback=renamed("--max-in-flight"),
        ),
        click.option("--rpm", type=click.FloatRange(min=0, min_open=True), help="Requests per minute limit."),
        click.option("--tpm", type=click.FloatRange(min=0, min_open=True), help="Tokens per minute limit."),
        click.option(
            "--max-attempts",
            type=click.IntRange(min=1),
            help="Failed calls per line at most; 429s and overloads do not count [default: 5].",
        ),
        click.option(
            "--max-wait",
            type=Duration(),
            help="How long a line may stay rate-limited before it fails [default: 1h].",
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
        click.option(
            "--poll-interval",
            type=Duration(),
            help="Task lines: time between polls of a task [default: 15s].",
        ),
        click.option(
            "--download/--no-download",
            default=None,
            help="Task lines: fetch result files [default: download].",
        ),
        click.option(
            "--task-deadline",
            type=Duration(),
            help="Task lines: fail a task still going after this [default: the relay's: MJ 1h, 24h].",
        ),
        click.option(
            "--cache/--no-cache",
            default=None,
            help="Answer deterministic requests (temperature 0, embeddings) from earlier results "
            "[default: cache].",
        ),
        click.option("--cache-all", is_flag=True, default=None, help="Cache sampled requests too."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), _merge_alias(func))


metrics_option = click.option(
    "--metrics-port", type=click.IntRange(1, 65535), envvar="BATCHER_METRICS_PORT",
    help="Serve Prometheus metrics on this port while it runs (on 127.0.0.1, or BATCHER_METRICS_HOST).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
job_argument = click.argument("job_id", metavar="JOB", type=int)
RUN_KEYS = (
    *("concurrency", "rpm", "tpm", "max_attempts", "max_wait", "timeout", "pack", "pack_size"),
    *("poll_interval", "download", "task_deadline"),  # task lines
)


def run_flags(kw: dict[str, Any]) -> dict[str, Any]:
    """The run options given on the command line (None: not given)."""
    return {key: kw.get(key) for key in RUN_KEYS} | {
        "cache": cache_mode(kw.get("cache"), kw.get("cache_all"))
    }


def cache_mode(cache: bool | None, cache_all: bool | None) -> CacheMode | None:
    """``--cache``, ``--no-cache`` and ``--cache-all`` as the job's cache option (None: not given)."""
    if cache_all:
        if cache is False:
            raise click.UsageError("--cache-all and --no-cache contradict each other; choose one")
        return CacheMode.ALL
    if cache is None:
        return None
    return CacheMode.AUTO if cache else CacheMode.OFF


def job_options(kw: dict[str, Any]) -> JobOptions:
    """The options ``submit`` and ``run`` store with a new job: run flags and accounting."""
    return JobOptions().merged(
        **run_flags(kw),
        budget=kw.get("budget"),
        prices=tuple(str(p.resolve()) for p in kw.get("price_files") or ()) or None,
        group=kw.get("group") or None,
        tag=kw.get("tag") or None,
        metadata=kw.get("metadata") or None,
    )


def read_opts(kw: dict[str, Any]) -> ReadOptions:
    endpoint = Endpoint(kw["endpoint"]) if kw.get("endpoint") else None
    return ReadOptions(
        endpoint=endpoint,
        model=kw.get("model"),
        max_line_bytes=kw["max_line_bytes"],
        stream=bool(kw.get("stream")),
    )
