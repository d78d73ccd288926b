"""The example files: every one validates, and every endpoint family has an example line."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.reader import ParsedLine, ReadOptions, read_requests
from jobs.endpoints import Endpoint
from workers.endpoints import families, family_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BARE = ReadOptions(endpoint=Endpoint("/v1/embeddings"), model="text-embedding-3-small")


def _read(path: Path) -> list[ParsedLine]:
    options = BARE if path.name.startswith("bare-") else ReadOptions()
    lines = list(read_requests(path, options))
    bad = [line for line in lines if not isinstance(line, ParsedLine)]
    assert not bad, f"{path.name}: {bad}"
    return [line for line in lines if isinstance(line, ParsedLine)]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.jsonl")), ids=lambda p: p.name)
def test_every_example_file_is_valid(path: Path) -> None:
    assert _read(path)


def test_every_family_has_an_example_line() -> None:
    shown = {family_of(line.endpoint).name for path in EXAMPLES.glob("*.jsonl") for line in _read(path)}
    assert {f.name for f in families()} - shown == set()
