"""Task lines end to end against the stand-in relay: a mixed file through `batcher run`, with faults.

Every line ends in one terminal result; a submit whose answer was lost is never sent again; the
files saved are the bytes the relay served; the usage report's task counts and cost equal the
relay's own billing (charges less refunds).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_files import expected_file
from batcher.export import export_job
from batcher.usage import usage_report
from jobs.db import Store
from jobs.models import Task
from tests.cluster import Cluster, relay_cluster, wait_for_children
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl
from workers.prices import parse_prices

RUN_FLAGS = ("--poll-interval", "0.2", "--timeout", "10")  # a loaded machine answers slowly


REGION = {"after": "cat-u2", "button": "Vary (Region)", "maskBase64": "a.png"}
ZOOM = {"after": "cat-u2", "button": "Custom Zoom"}


def task_rows(folder: Path) -> list[dict[str, Any]]:
    (folder / "a.png").write_bytes(expected_file("mj-1.png"))
    (folder / "b.png").write_bytes(expected_file("mj-2.png"))
    return [
        batch_line("cat", "/mj/submit/imagine", {"prompt": "a red cat"}),
        batch_line("cat-u2", "/mj/submit/action", {"after": "cat", "button": "U2"}),
        batch_line("cat-v1", "/mj/submit/action", {"after": "cat", "button": "V1"}),
        # Vary (Region) and Custom Zoom: code 21, then the modal step (charged mj_modal)
        batch_line("cat-region", "/mj/submit/action", {**REGION, "modal": {"prompt": "a hat"}}),
        batch_line("cat-zoom", "/mj/submit/action", {**ZOOM, "modal": {"prompt": "a cat --ar 1:1 --zoom 2"}}),
        batch_line("blend", "/mj/submit/blend", {"base64Array": ["a.png", "b.png"]}),
        batch_line("describe", "/mj/submit/describe", {"base64": "a.png"}),
        batch_line("lost", "/mj/submit/imagine", {"prompt": "a lost cat [[fault:submit_timeout]]"}),
        batch_line("busy", "/mj/submit/imagine", {"prompt": "a busy cat [[fault:queue_fullx1]]"}),
        batch_line("banned", "/mj/submit/imagine", {"prompt": "a cat [[fault:banned]]"}),
        batch_line("broken", "/mj/submit/imagine", {"prompt": "a cat [[fault:task_fail]]"}),
        batch_line("nofile", "/mj/submit/imagine", {"prompt": "a cat [[fault:unfetchable]]"}),
        batch_line("song", "/suno/submit/music", {"gpt_description_prompt": "a song about cats"}),
        batch_line("words", "/suno/submit/lyrics", {"prompt": "cats at night"}),
        batch_line("bad-song", "/suno/submit/music", {"gpt_description_prompt": "x [[fault:task_fail]]"}),
        batch_line(
            "clip", "/v1/video/generations", {"model": "kling-v1", "prompt": "a cat runs", "duration": 10}
        ),
        batch_line(
            "sora", "/v1/videos", {"model": "sora-2-pro", "prompt": "a cat sleeps", "size": "1792x1024"}
        ),
        batch_line(
            "kling", "/kling/v1/videos/text2video", {"model_name": "kling-v1-6", "prompt": "a cat jumps"}
        ),
        batch_line(  # half the video made: the relay re-prices it on success, batcher reads its quota
            "kling-short",
            "/kling/v1/videos/text2video",
            {"model_name": "kling-v1-6", "prompt": "a cat naps [[fault:short_video]]", "duration": "10"},
        ),
        batch_line("luma", "/luma/generations", {"user_prompt": "a cat dances"}),
        batch_line("luma-more", "/luma/generations/{task_id}/extend", {"after": "luma", "user_prompt": "on"}),
        batch_line("luma-new", "/dream-machine/v1/generations", {"prompt": "a fox [[fault:luma_artifact]]"}),
        batch_line("luma-bad", "/luma/generations", {"user_prompt": "a fox [[fault:task_fail]]"}),
        batch_line("runway", "/runwayml/v1/image_to_video", {"promptImage": "a.png", "duration": 10}),
        batch_line(
            "runway-comet",
            "/runwayml/v1/image_to_video",
            {"promptImage": "https://example.com/cat.png", "promptText": "a cat [[fault:cometapi]]"},
        ),
        batch_line(
            "runway-web",
            "/runway/tasks",
            {"taskType": "gen3a_turbo", "options": {"text_prompt": "a cat swims", "init_image": "b.png"}},
        ),
        batch_line(
            "runway-bad",
            "/runway/tasks",
            {"taskType": "gen2", "options": {"text_prompt": "x [[fault:task_fail]]"}},
        ),
    ]


EXPECTED = {
    "cat": "succeeded", "cat-u2": "succeeded", "cat-v1": "succeeded", "cat-region": "succeeded",
    "cat-zoom": "succeeded", "blend": "succeeded",
    "describe": "succeeded", "lost": "failed", "busy": "succeeded", "banned": "failed",
    "broken": "failed", "nofile": "succeeded", "song": "succeeded", "words": "succeeded",
    "bad-song": "failed", "clip": "succeeded", "sora": "succeeded", "kling": "succeeded", "kling-short": "succeeded",
    "luma": "succeeded", "luma-more": "succeeded", "luma-new": "succeeded", "luma-bad": "failed",
    "runway": "succeeded", "runway-comet": "succeeded", "runway-web": "succeeded", "runway-bad": "failed",
}  # fmt: skip


@pytest.fixture
def task_relay(relay: RelayServer) -> RelayServer:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, task_seconds=0.5, hang_seconds=30))
    return relay


def check_run(
    db: Store,
    relay: RelayServer,
    out: Path,
    rows: list[dict[str, Any]],
    job_id: int = 1,
    *,
    killed: bool = False,
) -> None:
    """Each line ended as expected; with ``killed``, a line whose submit was in flight at the kill
    may instead have ended "submit outcome unknown" (``check_billing`` shows it was sent once), and
    the lines that follow from it, however far down, fail with it."""
    lines = {line.custom_id: line for line in all_lines(db)}
    unknown = {cid for cid, line in lines.items() if line.error_code == "submit_unknown"}
    origins = {r["custom_id"]: r["body"].get("after") for r in rows}
    excused = set(unknown) if killed else set()
    while killed and (more := {cid for cid in lines if origins[cid] in excused} - excused):
        excused |= more  # a line whose origin (or its origin's origin) a kill cut cannot be pressed
    states = {cid: line.state for cid, line in lines.items() if cid not in excused}
    assert states == {cid: s for cid, s in EXPECTED.items() if cid in states}, {
        cid: line.last_error for cid, line in lines.items()
    }
    assert "lost" in unknown and (killed or unknown == {"lost"})
    exported = read_jsonl(out)
    assert sorted(r["custom_id"] for r in exported) == sorted(r["custom_id"] for r in rows)
    for row in exported:
        body = row["response"]["body"] if row["response"] else None
        if row["error"] is None:
            assert body["urls"] or body["task"]["data"]["text"], row  # lyrics are text
            check_files(body)
    if "nofile" not in excused:  # a kill may have cut its submit
        nofile = next(r["response"]["body"] for r in exported if r["custom_id"] == "nofile")
        assert nofile["download_errors"] and not nofile["files"]
    check_billing(db, relay, job_id)


def check_files(body: dict[str, Any]) -> None:
    """Every file saved holds what the relay served at its URL."""
    fetched = [u for u in body["urls"] if u not in body.get("download_errors", {})]
    assert len(body["files"]) == len(fetched)
    for url, path in zip(fetched, body["files"], strict=True):
        name = url.rsplit("/", 1)[1].split("?")[0]
        if url.endswith("/content"):  # OpenAI-style video: fetched from the relay, with the key
            name = f"video-{url.split('/')[-2]}.mp4"
        assert Path(path).read_bytes() == expected_file(name), url


def check_billing(db: Store, relay: RelayServer, job_id: int) -> None:
    """Usage's cost equals the relay's charges less refunds of the tasks batcher knows; each submit
    whose answer was lost is one relay task batcher never learned of (sent once, never again)."""
    pricing = httpx.get(relay.url.removesuffix("/v1") + "/api/pricing").json()
    book = parse_prices(json.loads(json.dumps(pricing), parse_float=Decimal), source="relay")
    report = usage_report(db, [job_id], prices=book)
    per_task = relay.stats()["tasks"]["billing"]["per_task"]
    with db.session() as session:
        tasks = session.exec(select(Task).where(Task.job_id == job_id)).all()
    known = {t.relay_task_id for t in tasks}
    steps = sum(1 for t in tasks if t.modal in ("taken", "submitting"))  # a modal step is a call too
    unknown_lines = [line for line in all_lines(db) if line.error_code == "submit_unknown"]
    not_known = [tid for tid in per_task if tid not in known]
    # A submit cut by a kill may not have reached the relay: at most one relay task per unknown line.
    assert 1 <= len(not_known) <= len(unknown_lines)
    assert report.total.unknown_calls == sum(1 for a in all_attempts(db) if a.sent and a.status_code is None)
    assert report.total.cost == sum(Decimal(per_task[tid]["net_usd"]) for tid in per_task if tid in known)
    assert report.total.calls == len(EXPECTED) + steps == len(all_attempts(db))


def test_a_mixed_task_file_runs_end_to_end(
    env: str, db: Store, task_relay: RelayServer, tmp_path: Path
) -> None:
    rows = task_rows(tmp_path)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out), *RUN_FLAGS)
    assert result.exit_code == 3, result.stderr  # some lines failed, as they should
    check_run(db, task_relay, out, rows)
    per_model = task_relay.stats()["tasks"]["billing"]["per_model"]
    assert per_model["mj_imagine"]["charges"] == 5  # cat, lost (once: not sent again), busy, broken, nofile
    assert per_model["mj_modal"]["charges"] == 2  # Vary (Region) and Custom Zoom: each step charged once
    short = task_relay.stats()["tasks"]["billing"]["per_task"]
    assert sorted(b["adjusted_usd"] for b in short.values() if b["adjusted_usd"] != "0") == ["-0.35"]


def test_a_submit_a_proxy_answered_504_is_never_sent_again(
    env: str, db: Store, task_relay: RelayServer, tmp_path: Path
) -> None:
    """The relay took and charged the task; a proxy in front answered its own 504 page."""
    rows = [
        batch_line("mj", "/mj/submit/imagine", {"prompt": "a cat [[fault:submit_504]]"}),
        batch_line("song", "/suno/submit/music", {"gpt_description_prompt": "cats [[fault:submit_504]]"}),
    ]
    result = invoke(
        "run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(tmp_path / "o.jsonl"), *RUN_FLAGS
    )
    assert result.exit_code == 3, result.stderr
    assert {line.error_code for line in all_lines(db)} == {"submit_unknown"}
    billing = task_relay.stats()["tasks"]["billing"]["per_model"]
    assert billing["mj_imagine"]["charges"] == billing["suno_music"]["charges"] == 1  # sent once each
    report = usage_report(
        db,
        [1],
        prices=parse_prices(
            httpx.get(task_relay.url.removesuffix("/v1") + "/api/pricing").json(), source="relay"
        ),
    )
    assert report.total.unknown_calls == 2 and report.total.unknown_cost == Decimal("0.2")


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[Cluster, RelayServer]]:
    config = RelayConfig(api_key=RELAY_KEY, task_seconds=3, hang_seconds=30)
    with relay_cluster(tmp_path, config, broker_url=redis_url, db_url=pg_url) as both:
        yield both


def submitted_tasks(store: Store, job_id: int) -> int:
    with store.session() as session:
        rows = session.exec(select(Task).where(Task.job_id == job_id)).all()
    return sum(1 for t in rows if t.relay_task_id and t.state in ("submitted", "polling"))


@pytest.mark.redis
@pytest.mark.postgres
def test_two_celery_workers_run_a_task_file_through_a_kill_9(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    workers, relay = cluster
    rows = task_rows(tmp_path)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job_id = workers.submit(source, options={"poll_interval": 0.5, "timeout": 10})
    workers.start_worker("a")
    workers.start_worker("b")
    deadline = time.monotonic() + 120
    while submitted_tasks(workers.store, job_id) < 3:  # submitted, not yet polled to their end
        assert time.monotonic() < deadline, workers.tail_logs()
        time.sleep(0.1)
    for pid in wait_for_children(workers.workers["a"].pid):
        subprocess.run(["kill", "-9", str(pid)], check=False)  # the pool child: its pass in hand is lost
    workers.kill("a")
    workers.start_worker("c")
    workers.wait_done(job_id, timeout=240)
    out = tmp_path / "out.jsonl"
    export_job(workers.store, job_id, out)
    check_run(workers.store, relay, out, rows, job_id, killed=True)
    submitted = relay.stats()["tasks"]["billing"]["per_model"]["mj_imagine"]["charges"]
    assert submitted == 5  # a kill between submit and poll made no task be submitted again
