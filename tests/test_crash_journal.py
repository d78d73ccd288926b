"""kill -9 of a run: answers that had landed are not paid for twice, calls sent are not forgotten
(issue 11, 18-19). Repeats are counted from the relay's per-body counter, never from timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from jobs.db import Store
from tests.helpers import RELAY_KEY, all_attempts, batch_line, invoke, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow
IN_FLIGHT = 8
KILLS = 3


def rows(n: int) -> list[dict[str, Any]]:
    body = {"model": "m", "messages": [{"role": "user", "content": ""}]}
    out = []
    for i in range(n):
        b = body | {"messages": [{"role": "user", "content": f"question {i}"}]}
        out.append(batch_line(f"c{i}", "/v1/chat/completions", b))
    return out


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def mid_call(relay: RelayServer, answered: int) -> bool:
    """The relay has answered ``answered`` calls and is answering another one now."""
    return relay.stats()["served"] >= answered and relay.in_flight() > 0


def run_and_kill(relay: RelayServer, answered: int) -> None:
    """Start `batcher run-job 1`, SIGKILL it once the relay has answered ``answered`` calls and
    holds at least one more: calls answered in waves leave moments with none in flight, and a
    kill then would leave no sent call without its answer to account for."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batcher", "run-job", "1", "--concurrency", str(IN_FLIGHT)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: mid_call(relay, answered) or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def repeats(relay: RelayServer) -> int:
    return sum(n - 1 for n in relay.stats()["per_key"].values() if n > 1)


def test_sigkill_repeats_at_most_the_calls_in_flight(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.05))
    lines = rows(360)
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    assert invoke("submit", str(source), "--no-queue").exit_code == 0
    for k in range(1, KILLS + 1):
        run_and_kill(relay, answered=k * 80)
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.output
    # Every call the relay answered twice was in flight at one of the kills.
    assert repeats(relay) <= KILLS * IN_FLIGHT, relay.stats()["per_key"]
    out = tmp_path / "out.jsonl"
    assert invoke("export", "1", "-o", str(out)).exit_code == 0
    assert Counter(r["custom_id"] for r in read_jsonl(out)) == Counter(r["custom_id"] for r in lines)


def test_calls_sent_before_a_kill_appear_in_usage(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.2))
    source = write_jsonl(tmp_path / "in.jsonl", rows(200))
    assert invoke("submit", str(source), "--no-queue").exit_code == 0
    run_and_kill(relay, answered=40)
    seen_by_relay = relay.stats()["calls"]
    result = invoke("usage", "1", "--format", "json")
    assert result.exit_code == 0
    report = orjson.loads(result.stdout)
    assert report["total"]["unknown_calls"] >= 1
    # Every call the relay saw is in the store: answered, or sent with no answer recorded.
    assert len(all_attempts(db)) >= seen_by_relay
