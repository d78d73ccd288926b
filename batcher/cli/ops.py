"""Operations commands: ``worker``, ``dev-relay`` and ``balance``."""

from __future__ import annotations

import os
from typing import Any

import click

from batcher.cli.base import App, cli, pass_app
from batcher.cli.options import json_option, renamed
from batcher.devrelay.enforce import Hints, LimitRules
from batcher.devrelay.faults import PERMANENT_FAULTS
from batcher.devrelay.windows import LimitMode
from batcher.render import table, to_json
from workers.client import client_config


def default_node_name() -> str:
    """``batcher<pid>@%h``: two workers on one host never share a node name (Celery expands %h)."""
    return f"batcher{os.getpid()}@%h"


def worker_argv(*, processes: int, hostname: str | None, queues: str | None, loglevel: str) -> list[str]:
    """The ``celery worker`` command line of ``batcher worker``."""
    from workers.app import QUEUE_PREFIX

    argv = ["worker", f"--concurrency={processes}", f"--hostname={hostname or default_node_name()}"]
    argv.append(f"--loglevel={loglevel}")
    if queues:
        argv += ["-Q", ",".join(QUEUE_PREFIX + k.strip() for k in queues.split(",") if k.strip())]
    return argv


@cli.command()
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes; each runs one chunk of lines at a time.",
)
@click.option(
    "--concurrency", "old_processes", type=click.IntRange(min=1), hidden=True,
    callback=renamed("--processes (--max-in-flight is the calls in flight of `run` and `submit`)"),
)  # fmt: skip
@click.option(
    "-n",
    "--hostname",
    help="Node name, e.g. gpu1@%h (%h is the host name) [default: batcher<pid>@%h, unique per process].",
)
@click.option(
    "--queues",
    help="Endpoint kinds to serve, comma-separated (chat,completions,embeddings,speech) [default: all].",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), envvar="BATCHER_METRICS_PORT",
    help="Serve the Prometheus metrics of all pool processes on this port (host: BATCHER_METRICS_HOST).",
)  # fmt: skip
@pass_app
def worker(
    app: App, /, *, processes: int, old_processes: int | None, hostname: str | None, queues: str | None,
    loglevel: str, metrics_port: int | None,
) -> None:  # fmt: skip
    """Start a Celery worker with batcher's settings (same as `celery -A workers.app worker`).

    Each process runs a chunk of lines at a time with up to the job's --max-in-flight
    calls; all workers share the Redis rate limiter. Needs BATCHER_BROKER_URL,
    BATCHER_DATABASE_URL and the provider settings. Log lines carry the time and the job.

    \b
    Example:
      batcher worker --processes 4 --queues embeddings,chat
      batcher worker --hostname gpu1@%h
      batcher worker --metrics-port 9464        # Prometheus scrapes :9464/metrics
    """
    from workers.app import default_app

    client_config(app.settings)  # a bad base URL stops the worker here, not each task later
    if app.settings.proxy:  # `batcher --proxy URL worker`: the pool processes read it from here
        os.environ["BATCHER_PROXY"] = app.settings.proxy
    processes = old_processes or processes
    if metrics_port is not None:  # the main process serves them once Celery starts (workers.tasks)
        os.environ["BATCHER_METRICS_PORT"] = str(metrics_port)
    argv = worker_argv(processes=processes, hostname=hostname, queues=queues, loglevel=loglevel)
    default_app().worker_main(argv)


@cli.command("dev-relay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--latency", type=float, default=0.05, show_default=True, help="Seconds added to each answer.")
@click.option(
    "--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of faulty calls."
)
@click.option("--rps-limit", type=int, default=0, help="Answer 429 past this many requests per second.")
@click.option("--api-key", help="Require this key (401 otherwise).")
@click.option(
    "--balance-usd", type=click.FloatRange(min=0), default=100.0, show_default=True,
    help="The limit its billing endpoints report (`batcher balance`); 0.1 cent used per answer.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--faults",
    help=(
        "Fault kinds to draw from, comma-separated; repeat one to weigh it: 503,503,hang. Default: "
        "429,429_empty,500,502,503,hang,reset,truncated,error200,missing_usage. Gateway imitations, "
        "only when named: zero_usage (usage all zeros), error_audio (a JSON error sent as audio/mpeg), "
        "nodb400 (LiteLLM's wrong-key 400), plain500 (its missing-key 500 text/plain), redirect "
        "(301 to https), overload200 (new-api's overload inside a 200), model404 (model_not_found), "
        "overloaded529 (Anthropic's 529 overloaded_error), stream_cut (a stream without its end), "
        "stream_overload (a stream broken off by an overload error event). "
        "Async task kinds, only when named: submit_timeout, submit_reset (task kept and charged, answer "
        "lost), task_fail, task_stuck, unfetchable, result_timeout (result URL 404 / hangs), queue_full "
        "(MJ code 23), banned (code 24), mj_queued, mj_existed (upstream 22 / 21), legacy_url. "
        "A request containing [[fault:KIND]] always gets that fault, [[fault:KINDxN]] its first N calls; "
        f"marker-only kinds: {', '.join(PERMANENT_FAULTS)}."
    ),
)
@click.option("--hang-seconds", type=float, default=30.0, show_default=True, help="How long a hang lasts.")
@click.option("--retry-after", type=float, default=1.0, show_default=True, help="Retry-After of 429 faults.")
@click.option("--limit-requests", type=click.IntRange(min=0), default=0, help="Requests per window and key.")
@click.option("--limit-tokens", type=click.IntRange(min=0), default=0, help="Tokens per window and key.")
@click.option(
    "--limit-window", type=click.FloatRange(min=0.001), default=1.0, show_default=True, help="Seconds."
)
@click.option(
    "--limit-mode",
    type=click.Choice([m.value for m in LimitMode]),
    default=LimitMode.SLIDING.value,
    show_default=True,
    help="fixed windows, a sliding log, or a token bucket.",
)
@click.option(
    "--limit-hints",
    type=click.Choice([h.value for h in Hints]),
    default=Hints.RETRY_AFTER.value,
    show_default=True,
    help="How a 429 says when to come back.",
)
@click.option("--ratelimit-headers", is_flag=True, help="Send x-ratelimit-* headers on every answer.")
@click.option("--max-concurrent", type=click.IntRange(min=0), default=0, help="503 past this many in flight.")
@click.option(
    "--overload-retry-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Retry-After of those 503s (0: none).",
)
@click.option(
    "--task-seconds",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Async tasks (Midjourney, Suno, video): seconds from submit to success or failure.",
)
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0.001),
    help="Fail unfinished tasks after this many seconds [default: 1 h Midjourney, 24 h Suno and video].",
)
@click.option(
    "--mj-raw", "mj_rewrite", flag_value=False, default=True,
    help="Answer Midjourney codes 21/22 as a bare midjourney-proxy (no new-api rewrite to 1).",
)  # fmt: skip
@click.option("--models", "model_names", help="Serve only these models (comma-separated) and list them.")
@click.option(
    "--quota-after", type=click.IntRange(min=0), default=0, help="Answer 403 out-of-quota after N answers."
)
def dev_relay(host: str, port: int, faults: str | None, model_names: str | None, **kw: Any) -> None:
    """Run a stand-in relay on loopback, to try batcher without an API key.

    It answers chat, completions, embeddings and speech deterministically, serves
    async tasks (Midjourney, Suno, video) with a whole lifecycle in --task-seconds, can
    inject faults (429, 5xx, hangs, resets, truncated JSON, errors inside 200), and
    enforces limits per API key the way real relays do (fixed or sliding windows,
    token buckets, a cap on calls in flight).

    \b
    Example:
      batcher dev-relay --latency 0.2 --fault-rate 0.1
      batcher dev-relay --limit-requests 100 --limit-mode sliding --max-concurrent 20
      batcher dev-relay --task-seconds 2 --task-timeout 10
    """
    from batcher.devrelay import RelayConfig, run_forever

    if faults:
        kw["faults"] = tuple(k.strip() for k in faults.split(",") if k.strip())
    kw["limits"] = _limit_rules(kw)
    kw["models"] = tuple(m.strip() for m in (model_names or "").split(",") if m.strip())
    try:
        config = RelayConfig(**kw)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    run_forever(config, host=host, port=port)


def _limit_rules(kw: dict[str, Any]) -> LimitRules:
    """Take the ``--limit-*`` options out of ``kw`` as the relay's rules."""
    overload_after = kw.pop("overload_retry_after")
    return LimitRules(
        requests=kw.pop("limit_requests"),
        tokens=kw.pop("limit_tokens"),
        window=kw.pop("limit_window"),
        mode=LimitMode(kw.pop("limit_mode")),
        hints=Hints(kw.pop("limit_hints")),
        ratelimit_headers=kw.pop("ratelimit_headers"),
        max_concurrent=kw.pop("max_concurrent"),
        overload_retry_after=overload_after or None,
    )


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
