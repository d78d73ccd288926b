"""CPU cost per line in instructions (valgrind callgrind), comparable across commits and loads.

    python -m benchmarks.instructions /path/to/checkout [/path/to/other ...] [--case no-pack]

Each checkout needs its own ``.venv`` with the project installed. The stand-in relay is this
checkout's, in its own process (its instructions are not counted); ``batcher run`` of each checkout
runs under callgrind twice per file, on the whole file and on its first lines, and the difference
divided by the difference in lines is the cost of one line without start-up. Instruction counts
hardly move with the machine's load, unlike seconds, so a regression check can run beside other
work.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from benchmarks.harness import chat_rows, embedding_rows, env_for, print_table, relay, write_lines

SMALL = 20
TOTAL = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    """One input file: its name, its rows and the ``batcher run`` options it is run with."""

    name: str
    lines: int
    rows: Any
    options: tuple[str, ...] = ()


CASES = (
    Case("chat", 2000, chat_rows),
    Case("embeddings, packed", 10000, embedding_rows),
    Case("embeddings, --no-pack", 2000, embedding_rows, ("--no-pack",)),
)


def _instructions(checkout: Path, case: Case, source: Path, env: dict[str, str], scratch: Path) -> int:
    """Instructions ``batcher run`` of this checkout executes on this file (one fresh store)."""
    out = scratch / "callgrind.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        str(checkout / ".venv" / "bin" / "python"),
        "-m",
        "batcher",
        "run",
        str(source),
        "-o",
        str(scratch / "results.jsonl"),
        *case.options,
    ]
    own = env | {"PYTHONPATH": str(checkout), "BATCHER_DATABASE_URL": f"sqlite:///{scratch / 'b.db'}"}
    done = subprocess.run(command, env=own, cwd=checkout, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: batcher run failed:\n{done.stderr.decode()[-2000:]}")
    found = TOTAL.search(out.read_bytes())
    if found is None:
        raise SystemExit(f"{checkout}: no instruction total in {out}")
    return int(found.group(1))


def _per_line(checkout: Path, case: Case, url: str, tmp: Path) -> float:
    counts = []
    for n in (SMALL, case.lines):
        scratch = Path(tempfile.mkdtemp(dir=tmp))
        source = write_lines(scratch / "in.jsonl", islice(case.rows(case.lines), n))
        env = env_for(scratch, url, "", BATCHER_PROGRESS_INTERVAL="3600")
        counts.append(_instructions(checkout, case, source, env, scratch))
    return (counts[1] - counts[0]) / (case.lines - SMALL)


def _rows(checkouts: list[Path], tmp: Path, cases: Sequence[Case]) -> Iterator[tuple[str, ...]]:
    with relay("--latency", "0.01") as rl:
        for case in cases:
            for checkout in checkouts:
                cost = _per_line(checkout, case, rl.url, tmp)
                yield (f"{case.name}, {case.lines} lines", _commit(checkout), f"{cost / 1e6:.2f} M")


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--case", action="append", help="only the cases whose name holds this (repeatable)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.case or any(part in c.name for part in args.case)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = list(_rows([c.resolve() for c in args.checkouts], Path(tmp), cases))
    print_table(
        "Instructions per line of `batcher run` (callgrind, start-up subtracted)",
        ("file", "commit", "instructions per line"),
        rows,
        "python -m benchmarks.instructions " + " ".join(map(str, args.checkouts)),
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
