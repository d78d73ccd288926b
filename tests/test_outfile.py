"""Output files: whole or not at all, compressed as their name says."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

from batcher.outfile import open_text, text_output


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.jsonl.zst", "out.csv.GZ"])
def test_text_output_round_trips_through_open_text(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with text_output(path) as f:
        f.write("héllo\n" * 1000)
    with open_text(path) as f:
        assert f.read() == "héllo\n" * 1000
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_gz_and_zst_names_are_really_compressed(tmp_path: Path) -> None:
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        with text_output(tmp_path / name) as f:
            f.write('{"x": 1}\n' * 10_000)
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == b'{"x": 1}\n' * 10_000
    zst = (tmp_path / "a.jsonl.zst").read_bytes()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst) == b'{"x": 1}\n' * 10_000
    assert len(zst) < 1000


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), text_output(path) as f:
        f.write("partial\n")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    path.write_text("old\n")
    with pytest.raises(RuntimeError), text_output(path) as f:
        f.write("partial\n")
        raise RuntimeError("boom")
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def test_text_output_makes_the_folder(tmp_path: Path) -> None:
    with text_output(tmp_path / "a" / "b" / "out.csv") as f:
        f.write("x\n")
    assert (tmp_path / "a" / "b" / "out.csv").read_text() == "x\n"
