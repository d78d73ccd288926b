"""The cyclic garbage collector's settings while an executor's event loop runs in this process.

CPython collects its young generation every 700 net new container objects and the whole heap
after every tenth pass of the middle one. A run allocates a few hundred such objects a call
(futures, requests, records, results waiting for their flush), so at 1,000 calls a second the
young generation was collected 150 times a second, and every few seconds the whole heap was
walked: the ~110,000 objects the imports left (SQLAlchemy's tables and compiled SQL, pydantic's
schemas, the modules), 50-100 ms each with the loop stopped. Besides the CPU (14 % of a
``--no-pack`` embedding run's busy samples under py-spy), every call in flight through such a
pause came back "slow", and the concurrency controller (``workers.concurrency``) read that as
the relay's queue building.

``long_lived()`` moves what is alive when the run starts out of the collector's sight
(``gc.freeze``: it lives as long as the process anyway) and raises the young generation's
threshold for the run; both are put back when it ends, so a process that runs one job after
another (a test session, a worker) keeps its heap collectable. The command line freezes what
its imports left at start-up (``batcher.__main__``); a run there leaves that frozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000  # 700 by default: a few calls' worth of objects, not a few dozen


@contextmanager
def long_lived() -> Iterator[None]:
    """The block runs with the heap as of now frozen and the young generation collected less often."""
    thresholds, first = gc.get_threshold(), not gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(max(YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if first:  # else an enclosing block (or the process, at start-up) froze the heap: its call
            gc.unfreeze()
