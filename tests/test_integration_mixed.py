"""One input file of every family, JSON lines and lines that upload files side by side, end to end.

Chat (plain, vision, streamed), completions, embeddings, speech, transcriptions and translations
(audio files and a ``data:`` URL), image generations and edits (image files), responses,
moderations, Claude ``/v1/messages`` and Gemini ``generateContent`` / ``streamGenerateContent``
/ ``embedContent`` / ``batchEmbedContents`` go in one file, over real loopback HTTP against the
stand-in relay: through ``batcher run`` in process, and through two Celery workers that read the
audio and images from the store (the submitter's copies are gone before they start). Each test
checks one result per ``custom_id``, every stored body and saved file against its request, the
exports (JSON lines and CSV), and the usage against what the relay served, per family in its unit.
A third kills ``run-job`` mid-job with ``kill -9`` and resumes it: no line that had finished is
called again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.answers import body_key, expected_audio, expected_completion_text
from batcher.devrelay.forms import uploaded_file
from batcher.devrelay.gemini_answers import gemini_embedding
from batcher.devrelay.media import expected_image
from batcher.export import export_job
from batcher.usage import usage_report
from jobs.db import Store
from tests.cluster import Cluster, relay_cluster
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl
from tests.test_integration_families import CASES
from tests.test_integration_files import audio_rows, check_transcripts, image_rows, relay_body
from workers.prices import load_prices

pytestmark = pytest.mark.slow

Row = dict[str, Any]
IMAGE_IDS = ("url", "b64", "tokens", "gone", "edit")  # variations fail (501): issue 13's images test
EVERY_FAMILY = {
    "chat", "claude", "completions", "embeddings", "gemini", "gemini_embed", "gemini_stream",
    "image_edits", "images", "moderations", "responses", "speech", "transcriptions",
}  # fmt: skip


def json_rows(copies: int) -> list[Row]:
    """``copies`` lines of every JSON case, and of the families the JSON cases leave out."""
    rows = [
        batch_line(f"{n}-{i}", case.url, case.body(i)) for i in range(copies) for n, case in enumerate(CASES)
    ]
    for i in range(copies):
        rows += [
            batch_line(f"comp-{i}", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": f"say {i}"}),
            batch_line(f"tts-{i}", "/v1/audio/speech", {"model": "tts-1", "input": f"hello {i}", "voice": "alloy"}),
            batch_line(
                f"gembed-{i}",
                "/v1beta/models/text-embedding-004:embedContent",
                {"content": {"parts": [{"text": f"one {i}"}]}},
            ),
        ]  # fmt: skip
    return rows


def mixed_rows(folder: Path, copies: int) -> tuple[list[Row], list[Row], list[Row]]:
    """The JSON lines, the audio lines and the image lines, written beside ``folder``'s input file."""
    images = [r for r in image_rows(folder) if r["custom_id"] in IMAGE_IDS]
    audio = [r | {"custom_id": f"{r['custom_id']}-{i}"} for i in range(copies) for r in audio_rows(folder)]
    return json_rows(copies), audio, images


def interleaved(*groups: list[Row]) -> list[Row]:
    """The lines of every group taken in turn, so no family runs alone."""
    out: list[Row] = []
    for i in range(max(len(g) for g in groups)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def check_json_line(row: Row, line: Row) -> None:
    body, request, cid = row["response"]["body"], line["body"], line["custom_id"]
    if cid.startswith("comp-"):
        assert body["choices"][0]["text"] == expected_completion_text(request)
    elif cid.startswith("tts-"):
        assert Path(body["audio_path"]).read_bytes() == expected_audio(request)
    elif cid.startswith("gembed-"):
        assert body["embedding"]["values"] == gemini_embedding(request["content"])
    else:
        CASES[int(cid.split("-", maxsplit=1)[0])].check(body, request)


def check_images(exported: dict[str, Row], images: list[Row], folder: Path) -> None:
    for line in images:
        items = exported[line["custom_id"]]["response"]["body"]["data"]
        if line["custom_id"] == "gone":  # a URL that cannot be fetched stays, saying why
            assert items[0]["download_error"] == "not saved: HTTP 404"
            continue
        body, task = relay_body(folder, line)
        assert len(items) == line["body"].get("n", 1)
        for n, item in enumerate(items):
            assert "b64_json" not in item and Path(item["file"]).read_bytes() == expected_image(body, task, n)


def check_results(
    out: Path, rows: list[Row], groups: tuple[list[Row], list[Row], list[Row]], folder: Path
) -> None:
    """One exported result per custom_id, in input order, each matching its request."""
    exported = read_jsonl(out)
    assert [r["custom_id"] for r in exported] == [r["custom_id"] for r in rows]
    assert all(r["error"] is None for r in exported), [r for r in exported if r["error"]]
    by_id = {r["custom_id"]: r for r in exported}
    json_lines, audio, images = groups
    for line in json_lines:
        check_json_line(by_id[line["custom_id"]], line)
    check_transcripts([by_id[r["custom_id"]] for r in audio], audio, folder)
    check_images(by_id, images, folder)


def check_usage(store: Store, relay: RelayServer) -> None:
    """The lines keep what the relay served; the families whose answers have no usage flag it."""
    lines = all_lines(store)
    stats = relay.stats()
    served, reported = stats["usage"], stats["reported_usage"]
    for unit in ("characters", "seconds", "images"):
        assert sum(getattr(ln, unit) or 0 for ln in lines) == served[unit] > 0, unit
    confirmed = [ln for ln in lines if not ln.usage_estimated]
    assert sum(ln.prompt_tokens or 0 for ln in confirmed) == reported["prompt_tokens"]
    assert sum(ln.completion_tokens or 0 for ln in confirmed) == reported["completion_tokens"]
    flagged = {ln.endpoint for ln in lines if ln.usage_estimated}
    assert flagged == {
        "/v1/moderations",
        "/v1beta/models/text-embedding-004:embedContent",
        "/v1beta/models/text-embedding-004:batchEmbedContents",
    }


def check_report(store: Store) -> None:
    """``usage --by family``: every family, each priced, in its own unit."""
    report = usage_report(store, None, by="family", prices=load_prices())
    totals = {row.key[0].partition(" (")[0]: row.totals for row in report.rows}
    assert set(totals) == EVERY_FAMILY
    units = {row.key[0] for row in report.rows}
    assert {"speech (characters)", "transcriptions (seconds)", "images (images)", "claude (tokens)"} <= units
    assert report.total.unpriced_models == {"e", "flux-schnell"}  # the test's own model names
    for family in (
        "claude",
        "gemini",
        "gemini_stream",
        "responses",
        "speech",
        "transcriptions",
        "image_edits",
    ):
        assert totals[family].cost > 0, family
    assert totals["moderations"].cost == 0 and totals["moderations"].unpriced_calls == 0
    # url 1 + b64 1 + tokens n=2 + gone 1 (made and billed, not fetched)
    assert totals["images"].billed.images == 5 and totals["transcriptions"].billed.seconds > 0
    assert totals["speech"].characters == sum(len(f"hello {i}") for i in range(totals["speech"].calls))


def check_csv(out: Path) -> None:
    assert invoke("export", "1", "-o", str(out), "--format", "csv").exit_code == 0
    text = out.read_text()
    assert "WEBVTT" in text and "-0.png" in text and ".wav" in text  # transcripts, images and audio by name


def test_run_a_mixed_file_of_every_family_with_files(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    groups = mixed_rows(tmp_path, copies=2)
    rows = interleaved(*groups)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    check_results(out, rows, groups, tmp_path)
    check_usage(db, relay)
    check_report(db)
    check_csv(tmp_path / "out.csv")
    # The fault line's first call only: its copies share one body, and [[fault:500x1]] counts per body.
    assert relay.stats()["by_fault"] == {"500": 1}


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[Cluster, RelayServer]]:
    with relay_cluster(
        tmp_path, RelayConfig(api_key=RELAY_KEY, latency=0.02), broker_url=redis_url, db_url=pg_url
    ) as both:
        yield both


@pytest.mark.redis
@pytest.mark.postgres
def test_two_celery_workers_run_the_mixed_file_from_the_store(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    c, relay = cluster
    submitter = tmp_path / "submitter"
    submitter.mkdir()
    groups = mixed_rows(submitter, copies=3)
    rows = interleaved(*groups)
    job_id = c.submit(write_jsonl(submitter / "in.jsonl", rows))
    kept = {p: p.read_bytes() for folder in ("audio", "pics") for p in (submitter / folder).iterdir()}
    for path in kept:
        path.unlink()  # the workers must not need the submitter's files
    c.start_worker("a", concurrency=2)
    c.start_worker("b", concurrency=2)
    c.wait_done(job_id)
    out = tmp_path / "out.jsonl"
    export_job(c.store, job_id, out)
    for path, data in kept.items():
        path.write_bytes(data)  # back, so the checks can hash them
    check_results(out, rows, groups, submitter)
    check_usage(c.store, relay)
    check_report(c.store)
    workers = {a.worker.split(":")[1] for a in all_attempts(c.store) if a.worker}
    assert len(workers) >= 2  # both workers took part


def relay_keys(store: Store, rows: list[Row], folder: Path) -> dict[str, str]:
    """The stand-in relay's key (``body_key`` of the body it parsed) of each line it can be told for.

    JSON lines as stored (streamed ones carry ``stream_options``); audio lines with their upload
    as the relay describes it. Left out: lines with list fields sent as ``x[]`` form fields (the
    verbose transcript, the edit of two images), whose keys the relay builds its own way, and the
    ``data:`` URL line.
    """
    stored = {ln.custom_id: orjson.loads(ln.body) for ln in all_lines(store)}
    keys = {}
    for line in rows:
        body, cid = line["body"], line["custom_id"]
        file = body.get("file")
        if "image" in body or isinstance(body.get("timestamp_granularities"), list):
            continue
        if file is None:
            keys[cid] = body_key(stored[cid])
        elif not file.startswith("data:"):  # a data: URL is named by batcher: left out too
            upload = uploaded_file(Path(file).name, "audio/wav", (folder / file).read_bytes())
            keys[cid] = body_key(body | {"file": upload})
    return keys


def test_a_mixed_job_with_files_killed_mid_run_never_calls_a_finished_line_again(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.1))
    json_lines, audio, images = mixed_rows(tmp_path, copies=4)
    audio = [  # every copy its own body, so the relay's count per body is a count per line
        r | {"body": r["body"] | {"prompt": f"{r['body'].get('prompt', '')} copy {r['custom_id']}"}}
        for r in audio
        if "[[fault:" not in r["body"].get("prompt", "")
    ]
    rows = interleaved(json_lines, audio, images)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("submit", str(source), "--no-queue", "--no-pack").exit_code == 0
    command = [sys.executable, "-m", "batcher", "run-job", "1", "--max-in-flight", "6"]
    proc = subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while sum(ln.state == "succeeded" for ln in all_lines(db)) < len(rows) // 3:
        assert time.monotonic() < deadline and proc.poll() is None, "run-job ended or stalled before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = {ln.custom_id for ln in all_lines(db) if ln.state == "succeeded"}
    assert len(done_at_kill) < len(rows)
    calls_at_kill = dict(relay.stats()["per_key"])
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    calls_after = relay.stats()["per_key"]
    keys = relay_keys(db, rows, tmp_path)
    assert len(keys) > len(rows) * 3 // 4 and set(keys.values()) <= set(calls_after)  # the relay's keys
    assert {c: calls_after[k] for c, k in keys.items() if c in done_at_kill} == {
        c: calls_at_kill[k] for c, k in keys.items() if c in done_at_kill
    }
    assert sum(calls_after.values()) - sum(calls_at_kill.values()) <= len(rows) - len(done_at_kill)
    out = tmp_path / "out.jsonl"
    assert invoke("export", "1", "-o", str(out)).exit_code == 0
    check_results(out, rows, (json_lines, audio, images), tmp_path)
