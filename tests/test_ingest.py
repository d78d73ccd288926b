"""Ingest with ``--skip-invalid``: rejects streamed with their reasons, memory bounded (issue 11, 7)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson

from batcher.ingest import IngestOptions, ingest_file
from batcher.reader import ReadOptions
from jobs.db import Store

GOOD = b'{"custom_id": "ok", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}\n'


def test_skip_invalid_memory_does_not_grow_with_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with path.open("wb") as f:
        f.write(GOOD)
        for i in range(40_000):
            f.write(b'{"custom_id": "b%d", "url": "/v1/nope", "body": {}}\n' % i)
        f.write(b'{"custom_id": "huge", "body": "' + b"x" * 30_000_000 + b'"}\n')
    options = IngestOptions(read=ReadOptions(max_line_bytes=1_000_000), skip_invalid=True)
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        tracemalloc.start()
        try:
            result = ingest_file(store, path, options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (result.stored, result.rejected) == (1, 40_001)
    # A few copies of one 1 MB chunk of the long line; before, the problems and the long line
    # itself were held whole (82 MB here).
    assert peak < 20_000_000, f"peak {peak:,} bytes"
    assert result.rejects_path is not None
    with result.rejects_path.open("rb") as f:
        rejects = [orjson.loads(line) for line in f]
    assert [r["line"] for r in rejects] == list(range(2, 40_003))
    assert '"url" must be one of' in rejects[0]["errors"][0]
    assert rejects[-1]["errors"][0].startswith("line is 30,000,0")
    assert len(rejects[-1]["raw"]) <= 1_000_000
