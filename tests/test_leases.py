"""Lease owners: who counts as dead, and a chunk's owner alive from its claim on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batcher.ingest import IngestOptions, ingest_file
from jobs import store as q
from jobs.db import Store
from jobs.settings import load_settings
from tests.helpers import batch_line, write_jsonl
from workers import chunk
from workers.leases import living, new_owner, owner_is_dead, recover_dead_leases


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_is_dead_only_for_a_gone_process_of_this_host() -> None:
    host = socket.gethostname()
    assert owner_is_dead(f"{host}:{_dead_pid()}:abcd")
    assert not owner_is_dead(f"{host}:{os.getppid()}:abcd")  # alive
    assert not owner_is_dead(f"elsewhere:{_dead_pid()}:abcd")  # another host's lease only expires
    assert not owner_is_dead(f"{host}:notapid:abcd")


def test_an_owner_of_this_process_is_alive_inside_living_only() -> None:
    owner = new_owner()
    assert owner_is_dead(owner)  # an executor of this process that has ended
    with living(owner):
        assert not owner_is_dead(owner)
    assert owner_is_dead(owner)


def test_a_chunk_owner_is_alive_between_its_claim_and_its_executor(
    env: str, db: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the sweeper thread of a pool process took back every line a chunk had just
    claimed (its owner was registered only when the executor started) and they were paid twice."""
    rows = [batch_line(f"c{i}", "/v1/embeddings", {"model": "e", "input": f"t{i}"}) for i in range(5)]
    ingest_file(db, write_jsonl(tmp_path / "in.jsonl", rows), IngestOptions())
    with db.session() as session:
        q.start_job(session, 1)
    taken_back: list[int] = []

    class Stop(Exception):
        pass

    def sweep_now(store: Store, *args: Any, **kwargs: Any) -> None:
        with store.session() as session:  # what the sweeper thread does at this moment
            taken_back.append(recover_dead_leases(session, 1))
        raise Stop

    monkeypatch.setattr(chunk, "build_executor", sweep_now)
    owner = new_owner()
    with pytest.raises(Stop):
        runtime: Any = SimpleNamespace(client=None, limiter=None)
        chunk.run_chunk(db, load_settings(), 1, [1, 2, 3, 4, 5], runtime=runtime, owner=owner)
    assert taken_back == [0]
    with db.session() as session:
        assert q.state_counts(session, 1)["running"] == 5
