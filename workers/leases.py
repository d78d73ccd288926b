"""Lease owners: naming an executor, and telling whether the process behind a lease is gone.

An owner is ``host:pid:tag``. On the same host, a lease whose pid no longer exists belongs to a
killed process (``kill -9`` of a run or of a Celery pool child), so its lines can be taken back at
once instead of waiting for the lease to run out. Another host's lease only expires.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator

from sqlmodel import Session

from jobs import store as q


class LiveOwners:
    """Owners of executors running in this process: a sweeper thread in the same process must not
    take back the lines they are working on, though their pid is alive by definition.

    Counted per holder: a chunk task marks its owner from before the claim, the executor marks it
    again while it runs, and the executor outlives the task (``workers.chunk``: the task returns
    while the last calls drain), so the task's end must not unmark it.
    """

    def __init__(self) -> None:
        self._holders: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()  # the task's thread and the event loop's both count

    def add(self, owner: str) -> None:
        """One more holder keeps ``owner`` alive."""
        with self._lock:
            self._holders[owner] += 1

    def discard(self, owner: str) -> None:
        """One holder less; the owner is dead to this process once none is left."""
        with self._lock:
            self._holders[owner] -= 1
            if self._holders[owner] <= 0:
                del self._holders[owner]

    def __contains__(self, owner: object) -> bool:
        return owner in self._holders


LIVE_OWNERS = LiveOwners()


@contextlib.contextmanager
def living(owner: str) -> Iterator[str]:
    """Mark ``owner`` alive in this process for the block: from before its first claim to its end.

    Registered only when the executor starts, an owner whose lines were already claimed looked
    dead to the sweeper thread of its own process in between (seconds under load), which took all
    of them back and had them called, and paid, a second time.
    """
    LIVE_OWNERS.add(owner)
    try:
        yield owner
    finally:
        LIVE_OWNERS.discard(owner)


def new_owner() -> str:
    """A lease owner name unique to one executor: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str, *, current: str | None = None) -> bool:
    """True when the owner ran on this host in a process that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or owner == current:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in LIVE_OWNERS  # an earlier executor of this very process has ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def recover_dead_leases(session: Session, job_id: int, *, current: str | None = None) -> int:
    """Give back the job's lines leased by dead processes on this host; return how many."""
    dead = [o for o in q.lease_owners(session, job_id) if owner_is_dead(o, current=current)]
    return q.release_owners(session, job_id, dead)
