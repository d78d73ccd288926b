"""The ``batcher`` command line: thin click commands over the library functions.

One module per command group: ``base`` (the group, shared app object, exit codes), ``options``
(option bundles), ``run`` (commands that read a file), ``control`` (commands over stored jobs),
``cleanup`` (delete and prune), ``dashboard`` (the web dashboard), ``ops`` (worker, dev relay,
balance), ``usage`` (usage and estimate), ``cache`` (the response cache), ``models`` (the
providers' models and keys). Importing this package registers every command on ``cli``.
"""

from __future__ import annotations

from batcher.cli import cache, cleanup, control, dashboard, models, ops, run, usage
from batcher.cli.base import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, App, DomainError, cli

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "App", "DomainError", "cli", "main"]
_COMMAND_MODULES = (cache, cleanup, control, dashboard, models, ops, run, usage)


def main() -> None:
    """The console script."""
    cli(prog_name="batcher")
