"""``python -m batcher``, and the ``batcher`` console script.

The cyclic garbage collector is off while the command line's modules load: they leave ~110,000
objects that all live as long as the process, so the collector's passes over them during the
imports find nothing, and cost about 0.1 s of every command's start-up.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Load the command line with the collector off, then run it."""
    gc.disable()
    try:
        from batcher.cli import main as cli
    finally:
        gc.freeze()  # out of the collector's sight for good: they live as long as the process
        gc.enable()
    cli()


if __name__ == "__main__":
    main()
