"""The ``batcher`` group, what its commands share (settings, the store) and the exit codes.

A ``BatcherError`` raised by any command becomes its message and exit code 1; usage errors exit 2
(click's own); anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from batcher.render import printable
from jobs.db import Store, open_store
from jobs.errors import BatcherError
from jobs.settings import Settings, load_settings
from workers.redact import install_log_redaction

EXIT_OK = 0  # every line succeeded
EXIT_ERROR = 1  # a domain error: bad input, a stopped job, an unreachable service
EXIT_USAGE = 2  # click's code for a bad command line
EXIT_PARTIAL = 3  # the job completed but some lines failed: see the errors in the export


class DomainError(click.ClickException):
    """A ``BatcherError`` shown as a clean message with exit code 1, control characters escaped."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


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
            self._store = open_store(self.settings)
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
@click.option(
    "--proxy", metavar="URL",
    help="HTTP proxy for API calls, `none` for none [default: BATCHER_PROXY, else HTTPS_PROXY/HTTP_PROXY "
    "unless NO_PROXY names the host; never for loopback].",
)  # fmt: skip
@click.option(
    "--config", "config_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Providers and keys (batcher.toml) [default: BATCHER_CONFIG, ./batcher.toml, ~/.config/batcher/].",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, proxy: str | None, config_file: Path | None) -> None:
    """Batch job processor for OpenAI-compatible APIs and relays.

    \b
    Try it offline:
      batcher dev-relay &                      # a stand-in relay on 127.0.0.1:8765
      export OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-dev
      batcher run examples/chat.jsonl -o results.jsonl
    """
    if config_file is not None:  # in the environment too, for the worker processes it starts
        os.environ["BATCHER_CONFIG"] = str(config_file.resolve())
    try:
        settings = load_settings(**({"proxy": proxy} if proxy is not None else {}))
    except BatcherError as exc:
        raise DomainError(str(exc)) from None
    install_log_redaction(settings.secret_values())
    ctx.obj = App(settings)
    ctx.call_on_close(ctx.obj.close)
