"""Calls paid twice after kill -9: ``batcher run-job`` killed K times, then finished.

    python -m benchmarks.crash_repeats --lines 1000 --in-flight 32 --kills 3 --latency 0.05

The relay (in this process, on loopback) counts calls per request body, so a repeat is a body it
answered more than once; the promise is repeats <= in flight x kills. Run it from an older
checkout's PYTHONPATH to see the figure before the journal.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batcher.devrelay import RelayConfig, RelayServer
from benchmarks.harness import env_for

KEY = "sk-bench-crash-0123456789"


def _write_input(path: Path, lines: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            body = {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}
            f.write(json.dumps({"custom_id": f"c{i}", "url": "/v1/chat/completions", "body": body}) + "\n")


def _batcher(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "batcher", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(lines: int, in_flight: int, kills: int, latency: float) -> dict[str, int]:
    """Run, kill and finish one job; the relay's repeat count and the bound."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        RelayServer(RelayConfig(api_key=KEY, latency=latency)) as relay,
    ):
        env = env_for(Path(tmp), relay.url, f"sqlite:///{tmp}/crash.db", OPENAI_API_KEY=KEY)
        source = Path(tmp) / "in.jsonl"
        _write_input(source, lines)
        _batcher(env, "submit", str(source), "--no-queue").wait()
        for k in range(1, kills + 1):
            proc = _batcher(env, "run-job", "1", "--concurrency", str(in_flight))
            while relay.stats()["served"] < k * lines // (kills + 1) and proc.poll() is None:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        _batcher(env, "run-job", "1", "--concurrency", str(in_flight)).wait()
        per_body = relay.stats()["per_key"].values()
        repeats = sum(n - 1 for n in per_body if n > 1)
    return {
        "lines": lines,
        "kills": kills,
        "in_flight": in_flight,
        "repeats": repeats,
        "bound": kills * in_flight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    print(json.dumps(measure(args.lines, args.in_flight, args.kills, args.latency)))


if __name__ == "__main__":
    main()
