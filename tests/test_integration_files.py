"""Lines that send files, end to end over real loopback HTTP: ``batcher run`` and two Celery workers.

Every stored transcript is checked against its line (the stand-in relay's answer depends on the
audio's sha256, name, language and prompt), usage against what the relay billed, and the
workers read the audio from the store: the submitter's files are gone before they start.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.media import expected_transcript, sample_wav
from batcher.export import export_job
from jobs.db import Store
from tests.cluster import Cluster, cluster_env
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow
CLIPS = {"one.wav": 1.5, "two.wav": 3.0}


def audio_rows(tmp: Path) -> list[dict[str, Any]]:
    (tmp / "audio").mkdir(exist_ok=True)
    for name, seconds in CLIPS.items():
        (tmp / "audio" / name).write_bytes(sample_wav(seconds))
    url = "data:audio/wav;base64," + base64.b64encode(sample_wav(2)).decode()
    t, tr = "/v1/audio/transcriptions", "/v1/audio/translations"

    def body(file: str, **extra: Any) -> dict[str, Any]:
        return {"model": "whisper-1", "file": file} | extra

    return [
        batch_line("json", t, body("audio/one.wav", language="en")),
        batch_line("text", t, body("audio/two.wav", response_format="text")),
        batch_line("srt", t, body("audio/one.wav", response_format="srt")),
        batch_line("vtt", t, body("audio/two.wav", response_format="vtt", prompt="names")),
        batch_line(
            "verbose",
            t,
            body(
                "audio/one.wav", response_format="verbose_json", timestamp_granularities=["word", "segment"]
            ),
        ),
        batch_line("translate", tr, body("audio/two.wav")),
        batch_line("tokens", t, body("audio/one.wav", model="gpt-4o-transcribe")),
        batch_line("data-url", t, body(url)),
        batch_line("fault", t, body("audio/two.wav", prompt="[[fault:500x1]]")),
    ]


def upload_of(tmp: Path, file: str) -> dict[str, Any]:
    if file.startswith("data:"):
        data, name = base64.b64decode(file.partition(",")[2]), "file.wav"
    else:
        data, name = (tmp / file).read_bytes(), Path(file).name
    return {"sha256": hashlib.sha256(data).hexdigest(), "filename": name}


def check_transcripts(exported: list[dict[str, Any]], rows: list[dict[str, Any]], tmp: Path) -> None:
    assert [r["custom_id"] for r in exported] == [r["custom_id"] for r in rows]
    for row, line in zip(exported, rows, strict=True):
        assert row["error"] is None, row
        request = line["body"] | {"file": upload_of(tmp, line["body"]["file"])}
        task = "translate" if line["url"].endswith("translations") else "transcribe"
        text = expected_transcript(request, task)
        body = row["response"]["body"]
        fmt = request.get("response_format", "json")
        if fmt in ("text", "srt", "vtt"):
            assert isinstance(body, str) and text in body
            assert body.startswith({"text": text, "srt": "1\n", "vtt": "WEBVTT\n"}[fmt])
        else:
            assert body["text"] == text
        if fmt == "verbose_json":
            assert [w["word"] for w in body["words"]] == text.split()


def check_usage(store: Store, relay: RelayServer) -> None:
    lines = all_lines(store)
    served = relay.stats()["usage"]
    assert sum(ln.seconds or 0 for ln in lines) == served["seconds"]
    assert sum(ln.prompt_tokens or 0 for ln in lines) == served["prompt_tokens"]
    assert sum(ln.completion_tokens or 0 for ln in lines) == served["completion_tokens"]
    assert not any(ln.usage_estimated for ln in lines)


@pytest.mark.parametrize("shared_folder", [False, True])
def test_run_transcribes_every_format_from_stored_audio(
    env: str,
    db: Store,
    relay: RelayServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_folder: bool,
) -> None:
    if shared_folder:
        monkeypatch.setenv("BATCHER_BLOB_DIR", str(tmp_path / "blobs"))
    rows = audio_rows(tmp_path)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(source), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    check_transcripts(read_jsonl(out), rows, tmp_path)
    check_usage(db, relay)
    assert relay.stats()["by_fault"] == {"500": 1}
    csv = tmp_path / "out.csv"
    assert invoke("export", "1", "-o", str(csv), "--format", "csv").exit_code == 0
    assert "1\n00:00:00,000 -->" in csv.read_text()  # a text format is the line's text
    usage = invoke("usage", "--by", "model")
    assert "audio s" in usage.stdout and "whisper-1" in usage.stdout


def test_validate_names_file_line_and_field(env: str, tmp_path: Path) -> None:
    rows = audio_rows(tmp_path)
    rows[2]["body"]["file"] = "audio/gone.wav"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = invoke("validate", str(source))
    assert result.exit_code == 1
    assert f'{source}:3: "file": audio/gone.wav does not exist' in result.stderr + result.stdout


# --- two Celery workers: the audio comes from the store -------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[Cluster, RelayServer]]:
    with RelayServer(RelayConfig(api_key=RELAY_KEY, latency=0.05)) as relay:
        env = cluster_env(tmp_path, relay_url=relay.url, key=RELAY_KEY, db_url=pg_url, broker_url=redis_url)
        c = Cluster(tmp_path, env, Store(pg_url))
        yield c, relay
        c.stop()
        c.store.close()


# --- images -------------------------------------------------------------------------------------


def image_rows(tmp: Path) -> list[dict[str, Any]]:
    from batcher.devrelay.media import sample_png

    (tmp / "pics").mkdir(exist_ok=True)
    (tmp / "pics" / "cat.png").write_bytes(sample_png("cat", side=8))
    (tmp / "pics" / "mask.png").write_bytes(sample_png("mask", side=8))
    g, e, v = "/v1/images/generations", "/v1/images/edits", "/v1/images/variations"
    return [
        batch_line("url", g, {"model": "dall-e-3", "prompt": "a cat", "size": "1024x1024"}),
        batch_line("b64", g, {"model": "flux-schnell", "prompt": "a dog", "response_format": "b64_json"}),
        batch_line("tokens", g, {"model": "gpt-image-1", "prompt": "two birds", "n": 2}),
        batch_line("gone", g, {"model": "dall-e-3", "prompt": "lost [[unfetchable]]"}),
        batch_line(
            "edit",
            e,
            {
                "model": "gpt-image-1",
                "prompt": "a hat",
                "image": ["pics/cat.png", "pics/cat.png"],
                "mask": "pics/mask.png",
            },
        ),
        *[batch_line(f"vary-{i}", v, {"model": "dall-e-2", "image": "pics/cat.png"}) for i in range(3)],
    ]


def relay_body(tmp: Path, line: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The body as the relay parsed it (uploads by digest), and the task."""
    body = dict(line["body"])
    if line["url"].endswith("generations"):
        return body, "generation"
    images = body.pop("image")
    uploads = [upload_of(tmp, p) for p in (images if isinstance(images, list) else [images])]
    body["image[]" if isinstance(images, list) else "image"] = (
        uploads if isinstance(images, list) else uploads[0]
    )
    if "mask" in body:
        body["mask"] = upload_of(tmp, body["mask"])
    return body, "edit"


def test_run_saves_every_image_and_fails_variations_on_the_first_501(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    from batcher.devrelay.media import expected_image

    rows = image_rows(tmp_path)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    result = invoke("run", str(source), "-o", str(out), "--errors", str(errors), "--max-in-flight", "1")
    assert result.exit_code == 3, result.stderr  # the variations failed
    exported = {r["custom_id"]: r for r in read_jsonl(out)}
    assert set(exported) == {"url", "b64", "tokens", "gone", "edit"}
    for line in rows[:5]:
        body, task = relay_body(tmp_path, line)
        items = exported[line["custom_id"]]["response"]["body"]["data"]
        if line["custom_id"] == "gone":
            assert items[0]["url"].endswith(".png") and items[0]["download_error"] == "not saved: HTTP 404"
            continue
        assert len(items) == line["body"].get("n", 1)
        for n, item in enumerate(items):
            assert "b64_json" not in item
            assert Path(item["file"]).read_bytes() == expected_image(body, task, n)
    failed = read_jsonl(errors)
    assert [r["custom_id"] for r in failed] == ["vary-0", "vary-1", "vary-2"]
    assert {r["error"]["code"] for r in failed} == {"api_not_implemented"}
    stats = relay.stats()
    # A line already waiting for its slot when the 501 came may still go; the rest fail uncalled.
    assert stats["by_status"][501] < 3
    assert stats["file_requests"] and not any("Authorization" in h for h in stats["file_requests"])
    lines = all_lines(db)
    assert sum(ln.images or 0 for ln in lines) == stats["usage"]["images"] == 6
    assert sum(ln.completion_tokens or 0 for ln in lines) == stats["usage"]["completion_tokens"]
    csv = tmp_path / "out.csv"
    assert invoke("export", "1", "-o", str(csv), "--format", "csv").exit_code == 0
    assert "-0.png" in csv.read_text()  # the text column names the files


def test_delete_takes_the_saved_images_and_the_blobs_no_job_uses(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from jobs.models import Blob

    rows = image_rows(tmp_path)[:5] + audio_rows(tmp_path)[:2]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert invoke("run", str(source), "-o", str(tmp_path / "out.jsonl")).exit_code == 0
    saved = [Path(i["file"]) for r in read_jsonl(tmp_path / "out.jsonl") if r["custom_id"] == "edit"
             for i in r["response"]["body"]["data"]]  # fmt: skip
    assert saved and all(p.is_file() for p in saved)
    assert invoke("delete", "1", "--yes").exit_code == 0
    assert not any(p.exists() for p in saved)
    with db.session() as s:
        assert s.connection().execute(sa.select(sa.func.count()).select_from(Blob)).scalar_one() == 0


@pytest.mark.redis
@pytest.mark.postgres
def test_two_workers_send_audio_and_images_read_from_the_store(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    from batcher.devrelay.media import expected_image

    c, relay = cluster
    submitter = tmp_path / "submitter"
    submitter.mkdir()
    audio = [r | {"custom_id": f"{r['custom_id']}-{i}"} for i in range(4) for r in audio_rows(submitter)]
    images = [r for r in image_rows(submitter) if r["custom_id"] in ("url", "b64", "edit")]
    job_id = c.submit(write_jsonl(submitter / "in.jsonl", audio + images))
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
    exported = read_jsonl(out)
    check_transcripts(exported[: len(audio)], audio, submitter)
    for row, line in zip(exported[len(audio) :], images, strict=True):
        body, task = relay_body(submitter, line)
        [item] = row["response"]["body"]["data"]
        assert Path(item["file"]).read_bytes() == expected_image(body, task, 0)
    lines = all_lines(c.store)
    served = relay.stats()["usage"]
    assert sum(ln.seconds or 0 for ln in lines) == served["seconds"]
    assert sum(ln.images or 0 for ln in lines) == served["images"] == 3
    workers = {a.worker.split(":")[1] for a in all_attempts(c.store) if a.worker}
    assert len(workers) >= 2  # both workers took part


def test_sigkill_mid_job_then_run_job_never_sends_a_done_audio_line_again(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from batcher.devrelay.answers import body_key
    from batcher.devrelay.forms import uploaded_file
    from jobs import store as q

    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.1))
    (tmp_path / "one.wav").write_bytes(sample_wav(1.5))
    bodies = [{"model": "whisper-1", "file": "one.wav", "prompt": f"line {i}"} for i in range(120)]
    rows = [batch_line(f"t{i}", "/v1/audio/transcriptions", b) for i, b in enumerate(bodies)]
    assert invoke("submit", str(write_jsonl(tmp_path / "in.jsonl", rows)), "--no-queue").exit_code == 0
    command = [sys.executable, "-m", "batcher", "run-job", "1", "--max-in-flight", "8"]
    proc = subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while True:
        with db.session() as s:
            if q.get_job(s, 1).succeeded >= 20:
                break
        assert time.monotonic() < deadline, "no line finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with db.session() as s:
        done_at_kill = {ln.custom_id for ln in q.iter_lines(s, 1) if ln.state == "succeeded"}
    calls_at_kill = dict(relay.stats()["per_key"])
    result = invoke("run-job", "1")
    assert result.exit_code == 0, result.stderr
    upload = uploaded_file("one.wav", "audio/wav", (tmp_path / "one.wav").read_bytes())
    keys = {r["custom_id"]: body_key(r["body"] | {"file": upload}) for r in rows}
    calls_after = relay.stats()["per_key"]
    assert all(calls_after[keys[c]] == calls_at_kill[keys[c]] for c in done_at_kill)
    assert set(keys.values()) <= set(calls_after)  # the keys are the relay's: every line was counted
    out = tmp_path / "out.jsonl"
    assert invoke("export", "1", "-o", str(out)).exit_code == 0
    check_transcripts(read_jsonl(out), rows, tmp_path)
