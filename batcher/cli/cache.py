"""The ``batcher cache`` group: what the response cache holds (``stats``) and emptying it (``clear``)."""

from __future__ import annotations

from datetime import timedelta

import click

from batcher.cli.base import App, cli, pass_app
from batcher.cli.cleanup import age_param
from batcher.render import table, to_json
from jobs import store as q
from jobs.models import utcnow


@cli.group()
def cache() -> None:
    """The response cache: answers of deterministic requests, reused instead of called again.

    \b
    Example:
      batcher cache stats
      batcher cache clear --older-than 30d
    """


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_app
def stats(app: App, as_json: bool) -> None:
    """How many answers the cache keeps, their hits and the tokens the hits saved.

    \b
    Example:
      batcher cache stats --json
    """
    with app.store.session() as session:
        s = q.cache_stats(session)
    data = {
        "entries": s.entries,
        "hits": s.hits,
        "saved_tokens": s.saved_tokens,
        "oldest": s.oldest.isoformat() if s.oldest else None,
        "newest": s.newest.isoformat() if s.newest else None,
    }
    if as_json:
        click.echo(to_json(data))
        return
    click.echo(table(("what", "value"), [(k, "" if v is None else v) for k, v in data.items()]))


@cache.command()
@click.option(
    "--older-than", callback=lambda c, p, v: None if v is None else age_param(c, p, v), metavar="AGE",
    help="Only answers stored longer ago than this: 30d, 12h, 2w.",
)  # fmt: skip
@pass_app
def clear(app: App, older_than: timedelta | None) -> None:
    """Delete kept answers (all, or those older than AGE); jobs' results stay as they are.

    \b
    Example:
      batcher cache clear
      batcher cache clear --older-than 30d
    """
    before = None if older_than is None else utcnow() - older_than
    with app.store.session() as session:
        removed = q.clear_cache(session, before=before)
    click.echo(f"removed {removed} cached answers", err=True)
