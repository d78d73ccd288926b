"""A rerun answered from the response cache: a 10,000-line file run, then run again with 100 lines changed.

    python -m benchmarks.cache_rerun --lines 10000 --changed 100 --latency 0.02

Both runs are ``batcher run`` processes (SQLite) against the stand-in relay in this process, on
loopback; the figure is the relay's own call count for the second run, which should equal the
lines changed. Chat lines at ``temperature`` 0, so the default ``--cache`` applies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batcher.devrelay import RelayConfig, RelayServer
from benchmarks.harness import env_for

KEY = "sk-bench-cache-0123456789"


def _write_input(path: Path, lines: int, changed: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            text = f"question {i}" + (" (edited)" if i < changed else "")
            body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
            f.write(json.dumps({"custom_id": f"c{i}", "url": "/v1/chat/completions", "body": body}) + "\n")


def _run(env: dict[str, str], source: Path) -> float:
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "batcher", "run", str(source), "-o", str(source.with_suffix(".out"))],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def measure(lines: int, changed: int, latency: float) -> dict[str, float]:
    """Calls and wall time of the first run and of the rerun with ``changed`` lines edited."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        RelayServer(RelayConfig(api_key=KEY, latency=latency)) as relay,
    ):
        env = env_for(Path(tmp), relay.url, f"sqlite:///{tmp}/cache.db", OPENAI_API_KEY=KEY)
        first, second = Path(tmp) / "first.jsonl", Path(tmp) / "second.jsonl"
        _write_input(first, lines, 0)
        _write_input(second, lines, changed)
        first_s = _run(env, first)
        first_calls = relay.stats()["calls"]
        second_s = _run(env, second)
        return {
            "lines": lines,
            "changed": changed,
            "first_calls": first_calls,
            "first_s": round(first_s, 1),
            "rerun_calls": relay.stats()["calls"] - first_calls,
            "rerun_s": round(second_s, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    print(json.dumps(measure(args.lines, args.changed, args.latency)))


if __name__ == "__main__":
    main()
