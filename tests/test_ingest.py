"""Ingest: all or nothing, rejects streamed with their reasons, memory bounded, one job per content."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
import pytest

from batcher.estimate import EstimateBuilder, estimate_file
from batcher.ingest import IngestOptions, ingest_file
from batcher.reader import ReadOptions
from jobs import store as q
from jobs.db import Store
from jobs.errors import InputError
from jobs.options import JobOptions
from tests.helpers import all_lines, batch_line, write_jsonl
from workers.prices import load_prices

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


# --- the rules of ingest (no test before the structure issue) ---------------------------------


def _file(tmp_path: Path, rows: list[dict[str, object]], name: str = "in.jsonl") -> Path:
    return write_jsonl(tmp_path / name, rows)


EMBED = [batch_line(f"e{i}", "/v1/embeddings", {"model": "m", "input": "abcdefgh"}) for i in range(3)]


@pytest.fixture
def sqlite(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store(f"sqlite:///{tmp_path / 'i.db'}") as store:
        yield store


def test_lines_are_stored_in_order_with_their_reservation(sqlite: Store, tmp_path: Path) -> None:
    chat = batch_line("c", "/v1/chat/completions", {"model": "g", "messages": [{"role": "user", "content": "abcd"}],
                                                    "max_tokens": 10})  # fmt: skip
    result = ingest_file(
        sqlite, _file(tmp_path, [*EMBED, chat]), IngestOptions(job_options=JobOptions(rpm=5))
    )
    assert (result.created, result.stored, result.rejected) == (True, 4, 0)
    lines = all_lines(sqlite)
    assert [(line.line_no, line.custom_id, line.state) for line in lines] == [
        (1, "e0", "pending"), (2, "e1", "pending"), (3, "e2", "pending"), (4, "c", "pending"),
    ]  # fmt: skip
    assert [line.est_tokens for line in lines] == [2, 2, 2, 3 + 4 + 1 + 10]  # prompt + max_tokens
    with sqlite.session() as s:
        job = q.get_job(s, result.job.id or 0)
        assert (job.total, q.options_of(job)) == (4, JobOptions(rpm=5))


def test_one_invalid_line_stores_nothing_and_names_every_problem(sqlite: Store, tmp_path: Path) -> None:
    bad = [*EMBED, batch_line("x", "/v1/embeddings", {"model": "m"}), {"custom_id": "y"}]
    with pytest.raises(InputError) as caught:
        ingest_file(sqlite, _file(tmp_path, bad), IngestOptions())
    assert [p.line for p in caught.value.problems] == [4, 5]
    assert 'embeddings need "input"' in str(caught.value)
    assert all_lines(sqlite) == []
    with sqlite.session() as s:
        assert q.list_jobs(s) == []  # the job row rolled back too


def test_skip_invalid_stores_the_rest_and_writes_the_rejects(sqlite: Store, tmp_path: Path) -> None:
    path = _file(tmp_path, [*EMBED, batch_line("x", "/v1/embeddings", {"model": "m"})])
    result = ingest_file(sqlite, path, IngestOptions(skip_invalid=True))
    assert (result.stored, result.rejected) == (3, 1)
    assert result.rejects_path == tmp_path / "in.rejects.jsonl"
    [reject] = [orjson.loads(line) for line in result.rejects_path.read_bytes().splitlines()]
    assert reject["line"] == 4


def test_the_same_content_is_the_same_job_unless_new(sqlite: Store, tmp_path: Path) -> None:
    first = ingest_file(sqlite, _file(tmp_path, EMBED), IngestOptions())
    again = ingest_file(sqlite, _file(tmp_path, EMBED, "copy.jsonl"), IngestOptions())
    assert (again.created, again.job.id, again.stored) == (False, first.job.id, 3)
    fresh = ingest_file(sqlite, _file(tmp_path, EMBED), IngestOptions(new=True, name="rerun"))
    assert fresh.created and fresh.job.id != first.job.id and fresh.job.name == "rerun"


def test_ingest_estimates_the_stored_lines_in_the_same_pass(sqlite: Store, tmp_path: Path) -> None:
    """The estimate submit compares with the balance comes from ingest's own read of the file."""
    rows = [
        batch_line(
            "a",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
        ),
        batch_line(
            "b",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "yo"}], "max_tokens": 30},
        ),
        batch_line("c", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello world"}),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    prices = load_prices(())
    result = ingest_file(sqlite, path, IngestOptions(estimate=EstimateBuilder(prices)))
    assert result.estimate is not None
    assert result.estimate == estimate_file(path, ReadOptions(), prices)
    assert {m.model: m.output_tokens for m in result.estimate.models} == {
        "gpt-4o-mini": 80,
        "text-embedding-3-small": 0,
    }
    assert ingest_file(sqlite, path, IngestOptions(new=True)).estimate is None  # only when asked


# --- input files (audio, images) ---------------------------------------------------------------


def _audio_lines(tmp_path: Path, names: list[str]) -> Path:
    from batcher.devrelay.media import sample_wav

    (tmp_path / "clips").mkdir(exist_ok=True)
    for n, name in enumerate(sorted(set(names))):
        if name != "missing.wav":
            (tmp_path / "clips" / name).write_bytes(sample_wav(1 + n))
    rows = [
        batch_line(f"t{i}", "/v1/audio/transcriptions", {"model": "whisper-1", "file": f"clips/{name}"})
        for i, name in enumerate(names)
    ]
    return _file(tmp_path, rows)


def _blob_count(store: Store) -> tuple[int, int]:
    import sqlalchemy as sa

    from jobs.models import Blob, JobBlob

    with store.session() as s:
        conn = s.connection()
        blobs = conn.execute(sa.select(sa.func.count()).select_from(Blob)).scalar_one()
        links = conn.execute(sa.select(sa.func.count()).select_from(JobBlob)).scalar_one()
    return int(blobs), int(links)


def test_input_files_are_stored_once_each_and_lines_point_to_them(sqlite: Store, tmp_path: Path) -> None:
    path = _audio_lines(tmp_path, ["a.wav", "b.wav", "a.wav", "a.wav"])
    result = ingest_file(sqlite, path, IngestOptions())
    assert result.stored == 4
    assert _blob_count(sqlite) == (2, 2)
    bodies = [orjson.loads(line.body) for line in all_lines(sqlite)]
    assert [b["file"]["name"] for b in bodies] == ["a.wav", "b.wav", "a.wav", "a.wav"]
    assert bodies[0]["file"]["blob"] == bodies[2]["file"]["blob"] != bodies[1]["file"]["blob"]
    assert [b["file"]["seconds"] for b in bodies[:2]] == [1.0, 2.0]


def test_a_missing_file_refuses_the_whole_file_and_stores_no_blob(sqlite: Store, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    path = _audio_lines(tmp_path, ["a.wav", "missing.wav"])
    with pytest.raises(InputError) as caught:
        ingest_file(sqlite, path, IngestOptions(blob_dir=folder))
    assert f'{path}:2: "file": clips/missing.wav does not exist' in str(caught.value)
    assert _blob_count(sqlite) == (0, 0)
    assert not [p for p in folder.rglob("*") if p.is_file()]  # the folder file of line 1 is gone too
    with sqlite.session() as s:
        assert q.list_jobs(s) == []


def test_with_a_blob_folder_the_bytes_go_there(sqlite: Store, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    ingest_file(sqlite, _audio_lines(tmp_path, ["a.wav"]), IngestOptions(blob_dir=folder))
    [stored] = [p for p in folder.rglob("*") if p.is_file()]
    assert stored.read_bytes() == (tmp_path / "clips" / "a.wav").read_bytes()


TASKS = [batch_line(f"t{i}", "/mj/submit/imagine", {"prompt": f"a cat {i}"}) for i in range(2)]


def test_a_file_mixing_task_lines_with_other_routes_is_refused_whole(sqlite: Store, tmp_path: Path) -> None:
    path = _file(tmp_path, [*TASKS, EMBED[0], batch_line("t9", "/suno/submit/lyrics", {"prompt": "x"})])
    with pytest.raises(InputError) as caught:
        ingest_file(sqlite, path, IngestOptions())
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == (str(path), 3)
    assert problem.message.startswith(
        '"url" /v1/embeddings is not a task route, but line 1 is /mj/submit/imagine'
    )
    assert "submit the task lines as their own file" in problem.message
    assert all_lines(sqlite) == []
    with sqlite.session() as s:
        assert q.list_jobs(s) == []  # nothing half-stored


def test_a_task_line_in_a_file_of_other_lines_names_both_routes(sqlite: Store, tmp_path: Path) -> None:
    path = _file(tmp_path, [*EMBED, TASKS[0]])
    with pytest.raises(InputError) as caught:
        ingest_file(sqlite, path, IngestOptions())
    [problem] = caught.value.problems
    assert problem.line == 4 and "/mj/submit/imagine is a task route" in problem.message
    assert "line 1 is /v1/embeddings" in problem.message


def test_skip_invalid_keeps_the_first_kind_and_rejects_the_other(sqlite: Store, tmp_path: Path) -> None:
    result = ingest_file(sqlite, _file(tmp_path, [*EMBED, *TASKS]), IngestOptions(skip_invalid=True))
    assert (result.stored, result.rejected) == (3, 2)
    assert result.rejects_path is not None
    rejects = [orjson.loads(line) for line in result.rejects_path.read_bytes().splitlines()]
    assert [orjson.loads(r["raw"])["custom_id"] for r in rejects] == ["t0", "t1"]  # ready to submit apart


# --- the bulk insert of each backend (SQLite: many rows a statement; PostgreSQL: COPY) ---------


def _awkward_rows(n: int) -> list[dict[str, object]]:
    """Lines whose values a hand-built statement or COPY could get wrong: quotes, tabs, backslashes."""
    texts = ["it's", 'say "hi"', "tab\there", "back\\slash", "new\nline", "é ü 中文", "\\N"]
    return [
        batch_line(f"id-{i}-{texts[i % len(texts)]}", "/v1/embeddings", {"model": "m", "input": texts[i % 7]})
        for i in range(n)
    ]


def test_lines_are_stored_whole_on_each_backend(store_url: str, tmp_path: Path) -> None:
    """More lines than one insert chunk and one SQLite statement hold, each read back as written."""
    rows = _awkward_rows(2_345)
    with Store(store_url) as store:
        result = ingest_file(store, _file(tmp_path, rows), IngestOptions())
        lines = all_lines(store)
    assert result.stored == len(lines) == 2_345
    assert [(line.line_no, line.custom_id) for line in lines] == [
        (i + 1, row["custom_id"]) for i, row in enumerate(rows)
    ]
    assert [orjson.loads(line.body) for line in lines] == [row["body"] for row in rows]
    defaults = {(line.state, line.attempts, line.claims, line.usage_estimated, line.cached) for line in lines}
    assert defaults == {("pending", 0, 0, False, False)}
    assert {(line.endpoint, line.model, line.price_key, line.job_id) for line in lines} == {
        ("/v1/embeddings", "m", None, result.job.id)
    }


def test_a_bad_last_line_stores_nothing_on_each_backend(store_url: str, tmp_path: Path) -> None:
    """The lines already inserted (two chunks) roll back with the job."""
    rows = [*_awkward_rows(4_100), batch_line("bad", "/v1/embeddings", {"model": "m"})]
    with Store(store_url) as store:
        with pytest.raises(InputError):
            ingest_file(store, _file(tmp_path, rows), IngestOptions())
        assert all_lines(store) == []
        with store.session() as s:
            assert q.list_jobs(s) == []
