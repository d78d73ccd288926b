"""The ``models`` and ``providers`` commands: what the configured providers serve and hold."""

from __future__ import annotations

import click

from batcher.cli.base import App, DomainError, cli, pass_app
from batcher.model_list import fetch_models
from batcher.provider_report import check, describe, provider_config, table_row
from batcher.render import table, to_json
from jobs.providers import Provider
from workers.client import client_config


def _chosen(app: App, name: str | None) -> list[Provider]:
    providers = app.settings.providers()
    if name is None:
        return providers
    chosen = [p for p in providers if p.name == name]
    if not chosen:
        names = ", ".join(f'"{p.name}"' for p in providers)
        raise DomainError(f'no provider named "{name}" is configured; configured: {names}')
    return chosen


@cli.command()
@click.option("--provider", help="Only this provider's models [default: every configured one].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_app
def models(app: App, provider: str | None, as_json: bool) -> None:
    """List the models the providers serve, one per line (GET /v1/models).

    `submit` and `run` refuse a file naming a model no provider serves.

    \b
    Example:
      batcher models
      batcher models --provider relay-a --json
    """
    base = client_config(app.settings)
    listed: dict[str, list[str]] = {}
    for p in _chosen(app, provider):
        config = provider_config(p, base) or base
        found = fetch_models(config)
        if found is None:
            raise DomainError(f"{config.base_url} does not list its models (GET /models is not offered)")
        listed[p.name] = found
    if as_json:
        click.echo(to_json(listed))
    elif len(listed) == 1:
        click.echo("\n".join(next(iter(listed.values()))))
    else:
        click.echo(table(("provider", "model"), [(p, m) for p, names in listed.items() for m in names]))


@cli.command()
@click.option("--check", "check_them", is_flag=True, help="Ask each provider for its models and balance.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_app
def providers(app: App, check_them: bool, as_json: bool) -> None:
    """List the configured providers and which of their keys are set (name and last 4 only).

    From batcher.toml (--config, ./batcher.toml or ~/.config/batcher/), else the
    environment's OPENAI_BASE_URL and OPENAI_API_KEY as the provider "default".

    \b
    Example:
      batcher providers
      batcher providers --check
    """
    found = app.settings.providers()
    base, secrets = client_config(app.settings), app.settings.secret_values()
    checks = [check(p, base, secrets) if check_them else None for p in found]
    if as_json:
        click.echo(to_json([describe(p, c) for p, c in zip(found, checks, strict=True)]))
        return
    headers: tuple[str, ...] = ("provider", "base URL", "models", "keys", "rpm")
    headers += ("reachable", "listed", "balance USD", "problems") if check_them else ()
    click.echo(table(headers, [table_row(p, c) for p, c in zip(found, checks, strict=True)]))
