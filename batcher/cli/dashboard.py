"""The ``dashboard`` command: a thin shell over ``batcher.dashboard``."""

from __future__ import annotations

import click

from batcher.cli.base import App, cli, pass_app
from batcher.dashboard.serve import DEFAULT_HOST, DEFAULT_PORT, binding, serve


@cli.command()
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to bind; beyond loopback a token is required.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--token",
    envvar="BATCHER_DASHBOARD_TOKEN",
    help="Token asked of every request [default: generated and printed when --host is not loopback].",
)
@pass_app
def dashboard(app: App, host: str, port: int, token: str | None) -> None:
    """Serve a web dashboard of jobs, progress, failures and cost over the store.

    Pages: jobs (progress, rate, ETA, cost), a job (live progress, calls over time, pace,
    cost by model, failed lines, pause/resume/cancel/retry, export), usage (report and a
    file's estimate). Loopback by default; anywhere else every request needs the token.

    \b
    Example:
      batcher dashboard                        # http://127.0.0.1:8770/
      batcher dashboard --host 0.0.0.0 --port 8770   # prints the address with its token
    """
    from batcher.dashboard.app import build_app

    bound = binding(host, port, token)
    web = build_app(app.store, app.settings, bound.access)
    click.echo(f"batcher dashboard on {bound.url}", err=True)
    if bound.generated:
        click.echo("a token was generated (give --token or BATCHER_DASHBOARD_TOKEN to choose one)", err=True)
    serve(bound, web)
