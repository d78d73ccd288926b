"""``python -m batcher``: the same as the ``batcher`` console script."""

from batcher.cli import main

main()
