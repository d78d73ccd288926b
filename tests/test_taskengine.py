"""The task engine end to end on the embedded path, against the fake relay of ``tests.taskfake``."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import select

from batcher.ingest import IngestOptions, ingest_file
from batcher.usage import usage_report
from jobs import store as q
from jobs.db import Store
from jobs.models import Request, Task
from jobs.options import JobOptions, RunMode
from jobs.settings import Settings
from tests.helpers import all_attempts, all_lines, batch_line, write_jsonl
from tests.taskfake import PRICES, FakeRelay, file_bytes
from workers.client import ApiClient
from workers.downloads import Downloader
from workers.prices import ListPrice, PriceBook
from workers.ratelimit import InProcessLimiter
from workers.taskbuild import build_task_engine
from workers.taskcalls import UNKNOWN_MESSAGE
from workers.taskengine import TaskEngine

BASE = "http://relay.test/v1"


def mixed_lines(tmp_path: Path) -> list[dict[str, Any]]:
    (tmp_path / "a.png").write_bytes(b"PNG-A")
    (tmp_path / "b.png").write_bytes(b"PNG-B")
    return [
        batch_line("cat-1", "/mj/submit/imagine", {"prompt": "a cat"}),
        batch_line("cat-1-u2", "/mj/submit/action", {"after": "cat-1", "button": "U2"}),
        batch_line("cat-1-v9", "/mj/submit/action", {"after": "cat-1", "button": "V9"}),
        batch_line("blend", "/mj/submit/blend", {"base64Array": ["a.png", "b.png"]}),
        batch_line("describe", "/mj/submit/describe", {"base64": "a.png"}),
        batch_line("banned", "/mj/submit/imagine", {"prompt": "banned words"}),
        batch_line("busy", "/mj/submit/imagine", {"prompt": "queuefull then fine"}),
        batch_line("lost", "/mj/submit/imagine", {"prompt": "lost answer"}),
        batch_line("fails", "/mj/submit/imagine", {"prompt": "this fails"}),
        batch_line("fails-u1", "/mj/submit/action", {"after": "fails", "button": "U1"}),
        batch_line("nofile", "/mj/submit/imagine", {"prompt": "nofile here"}),
        batch_line("song", "/suno/submit/music", {"gpt_description_prompt": "a song about cats"}),
        batch_line("words", "/suno/submit/lyrics", {"prompt": "cats"}),
        batch_line("clip", "/v1/video/generations", {"model": "kling-v1", "prompt": "a cat runs"}),
        batch_line("sora", "/v1/videos", {"model": "sora-2", "prompt": "a cat sleeps"}),
    ]


def ingest(store: Store, tmp_path: Path, rows: list[dict[str, Any]]) -> int:
    path = write_jsonl(tmp_path / "tasks.jsonl", rows)
    job = ingest_file(store, path, IngestOptions()).job
    assert job.id is not None
    with store.session() as session:
        q.start_job(session, job.id)
    return job.id


def engine_for(store: Store, job_id: int, relay: FakeRelay, **options: Any) -> TaskEngine:
    settings = Settings(base_url=BASE, api_key="sk-secret")  # type: ignore[call-arg]
    transport = relay.transport()
    engine = build_task_engine(
        store, settings, job_id, JobOptions().merged(**options), mode=RunMode.EMBEDDED,
        client=lambda conf: ApiClient(conf, transport=transport), limiter=InProcessLimiter,
    )  # fmt: skip
    engine.downloader = Downloader(base_url=BASE, key="sk-secret", transport=transport)
    object.__setattr__(engine.config, "poll_interval", 0.0)
    engine._sleep = _no_wait  # type: ignore[method-assign]
    engine._jitter = lambda: 0.0  # type: ignore[method-assign]
    return engine


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def run(store: Store, job_id: int, engine: TaskEngine) -> None:
    async def go() -> None:
        with store.session() as session:
            items = q.claim_lines(session, job_id=job_id, owner=engine.config.owner, lease_seconds=300)
        await engine.run(items)

    asyncio.run(go())


def by_id(store: Store) -> dict[str, Request]:
    return {line.custom_id: line for line in all_lines(store)}


def answer(line: Request) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(line.response_body or "{}")
    return result


def test_a_mixed_task_file_ends_with_one_result_per_line(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path))
    engine = engine_for(store, job_id, relay)
    # The later try of "busy" waits its backoff: the test's clock is the real one, the wait is not.
    engine._jitter = lambda: -1.0  # type: ignore[method-assign]  # later_delay() == 0
    run(store, job_id, engine)
    lines = by_id(store)
    states = {cid: line.state for cid, line in lines.items()}
    assert states == {
        "cat-1": "succeeded", "cat-1-u2": "succeeded", "cat-1-v9": "failed", "blend": "succeeded",
        "describe": "succeeded", "banned": "failed", "busy": "succeeded", "lost": "failed", "fails": "failed",
        "fails-u1": "failed", "nofile": "succeeded", "song": "succeeded", "words": "succeeded",
        "clip": "succeeded", "sora": "succeeded",
    }  # fmt: skip
    assert lines["lost"].last_error == UNKNOWN_MESSAGE and lines["lost"].error_code == "submit_unknown"
    assert "banned prompt (code 24)" in (lines["banned"].last_error or "")
    assert 'no button "V9"' in (lines["cat-1-v9"].last_error or "")
    assert "origin" in (lines["fails-u1"].last_error or "") and "image generation failed" in (
        lines["fails"].last_error or ""
    )
    with store.session() as session:
        assert q.get_job(session, job_id).status == "completed"


def test_a_follow_up_presses_its_origins_button(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path)[:2])
    run(store, job_id, engine_for(store, job_id, relay))
    origin = answer(by_id(store)["cat-1"])
    action = next(s for s in relay.submits if s["path"] == "/mj/submit/action")
    assert action["taskId"] == origin["task_id"]
    assert action["customId"] == f"MJ::JOB::upsample::2::{origin['task_id']}"
    assert "after" not in action and "button" not in action


def test_images_given_as_paths_go_as_data_urls(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path)[3:5])
    run(store, job_id, engine_for(store, job_id, relay))
    blend = next(s for s in relay.submits if s["path"] == "/mj/submit/blend")
    assert blend["base64Array"] == ["data:image/png;base64,UE5HLUE=", "data:image/png;base64,UE5HLUI="]


def test_downloaded_files_equal_what_the_relay_served_and_the_key_stays_home(
    store: Store, tmp_path: Path
) -> None:
    relay = FakeRelay()
    rows = [r for r in mixed_lines(tmp_path) if r["custom_id"] in ("cat-1", "song", "clip", "sora", "nofile")]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay))
    lines = by_id(store)
    cat = answer(lines["cat-1"])
    assert [Path(f).read_bytes() for f in cat["files"]] == [file_bytes(f"/mj/{cat['task_id']}.png")]
    assert len(answer(lines["song"])["files"]) == 2
    sora = answer(lines["sora"])
    assert Path(sora["files"][0]).read_bytes() == f"MP4:{sora['task_id']}".encode()
    nofile = answer(lines["nofile"])
    assert nofile["urls"] and nofile["download_errors"] == {nofile["urls"][0]: "HTTP 404"}
    files_host = [h for h in relay.file_headers if h.get("host") == "files.test"]
    assert files_host and all("authorization" not in h for h in files_host)
    relay_host = [h for h in relay.file_headers if h.get("host") == "relay.test"]
    assert relay_host and all(h["authorization"] == "Bearer sk-secret" for h in relay_host)


def test_no_download_keeps_the_urls_only(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path)[:1])
    run(store, job_id, engine_for(store, job_id, relay, download=False))
    cat = answer(by_id(store)["cat-1"])
    assert cat["urls"] and "files" not in cat and not relay.file_headers


def test_polls_go_in_batches(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    rows = [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(7)]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay))
    assert relay.polls.count("mj") == 4  # four polls take all seven tasks from "" to SUCCESS


def test_a_crash_between_submit_and_answer_is_never_submitted_again(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path)[:1])
    line = all_lines(store)[0]
    with store.session() as session:  # a submit began and its process died before the answer
        session.add(
            Task(request_id=line.id, job_id=job_id, state="submitting", submitted_at=1.0, next_poll_at=1.0)
        )
    run(store, job_id, engine_for(store, job_id, relay))
    assert relay.submits == []
    assert all_lines(store)[0].last_error == UNKNOWN_MESSAGE


def test_a_crash_after_the_task_id_polls_the_same_task(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path)[:1])
    first = engine_for(store, job_id, relay)
    first.stats.halted = None

    async def submit_only() -> None:
        with store.session() as session:
            items = q.claim_lines(session, job_id=job_id, owner=first.config.owner, lease_seconds=300)
        await first._load(items)
        await first._submit(next(iter(first.lines.values())))

    asyncio.run(submit_only())
    with store.session() as session:  # the process died: its lease goes back
        q.release_lines(session, [all_lines(store)[0].id or 0], owner=first.config.owner)
    run(store, job_id, engine_for(store, job_id, relay))
    assert len(relay.submits) == 1 and all_lines(store)[0].state == "succeeded"
    with store.session() as session:
        task = session.exec(select(Task)).one()
    assert task.state == "succeeded" and task.relay_task_id == answer(all_lines(store)[0])["task_id"]


def test_each_line_has_one_attempt_and_refunds_cost_nothing(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path))
    engine = engine_for(store, job_id, relay)
    engine._jitter = lambda: -1.0  # type: ignore[method-assign]
    run(store, job_id, engine)
    attempts = all_attempts(store)
    assert sorted(a.request_id for a in attempts) == sorted(line.id for line in all_lines(store))
    billed = [a for a in attempts if a.outcome == "ok"]
    lost = [a for a in attempts if a.status_code is None and a.sent]
    assert len(billed) == 10 and len(lost) == 1


def test_usage_cost_equals_the_relays_billing(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, mixed_lines(tmp_path))
    engine = engine_for(store, job_id, relay)
    engine._jitter = lambda: -1.0  # type: ignore[method-assign]
    run(store, job_id, engine)
    book = PriceBook(prices={m: ListPrice(per_call=usd) for m, usd in PRICES.items()})
    report = usage_report(store, [job_id], prices=book)
    lost_charge = PRICES["mj_imagine"]  # the relay charged the submit whose answer was lost
    assert report.total.cost == relay.billed - lost_charge
    assert (report.total.unknown_calls, report.total.unknown_cost) == (1, lost_charge)
    assert report.total.calls == len(all_lines(store))


@pytest.mark.parametrize(
    ("url", "body", "model"),
    [
        ("/mj/submit/imagine", {"prompt": "x"}, "mj_imagine"),
        ("/mj-fast/mj/submit/blend", {"base64Array": ["a.png", "b.png"]}, "mj_blend"),
        ("/mj/insight-face/swap", {"sourceBase64": "a.png", "targetBase64": "b.png"}, "swap_face"),
        ("/mj/submit/action", {"after": "x", "button": "U1"}, "mj_upscale"),
        ("/mj/submit/action", {"after": "x", "button": "Vary (Region)"}, "mj_inpaint"),
        ("/mj/submit/action", {"taskId": "1", "customId": "MJ::JOB::variation::2::1"}, "mj_variation"),
        ("/mj/submit/simple-change", {"content": "1 U2"}, "mj_upscale"),
        ("/suno/submit/lyrics", {"prompt": "x"}, "suno_lyrics"),
        ("/kling/v1/videos/text2video", {"model_name": "kling-v1-6", "prompt": "x"}, "kling-v1-6"),
        ("/v1/videos", {"model": "sora-2", "prompt": "x"}, "sora-2"),
    ],
)
def test_lines_are_counted_by_new_api_model_names(
    store: Store, tmp_path: Path, url: str, body: dict[str, Any], model: str
) -> None:
    (tmp_path / "a.png").write_bytes(b"A")
    (tmp_path / "b.png").write_bytes(b"B")
    rows = [batch_line("x", "/mj/submit/imagine", {"prompt": "x"}), batch_line("y", url, body)]
    ingest(store, tmp_path, rows)
    assert by_id(store)["y"].model == model


def test_retry_submits_unknown_outcomes_again_only_when_asked(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    rows = [r for r in mixed_lines(tmp_path) if r["custom_id"] in ("lost", "fails")]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay))
    with store.session() as session:
        assert q.retry_failed(session, job_id) == 1  # the refunded failure, not the lost submit
        q.start_job(session, job_id)
    run(store, job_id, engine_for(store, job_id, relay))
    assert sorted(s["prompt"] for s in relay.submits) == ["lost answer", "this fails", "this fails"]
    with store.session() as session:
        assert q.retry_failed(session, job_id, unknown=True) == 2
        q.start_job(session, job_id)
    run(store, job_id, engine_for(store, job_id, relay))
    assert sorted(s["prompt"] for s in relay.submits).count("lost answer") == 2


def test_status_shows_submitted_polling_with_progress_and_done(store: Store, tmp_path: Path) -> None:
    from batcher.status import render, take_snapshot

    relay = FakeRelay()
    rows = [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(3)]
    job_id = ingest(store, tmp_path, rows)
    lines = all_lines(store)
    with store.session() as session:
        for n, line in enumerate(lines):
            session.add(Task(request_id=line.id, job_id=job_id, state=["submitted", "polling", "succeeded"][n],
                             relay_task_id=str(n), progress=[None, "37%", "100%"][n]))  # fmt: skip
    text = render(take_snapshot(store, job_id), {"lines_per_s": None, "tokens_per_s": None, "eta_s": None})
    assert "tasks: 1 submitted, 1 polling (37%), 1 done (1 succeeded, 0 failed)" in text
    assert relay.submits == []


def test_export_writes_one_line_per_task_with_status_urls_files_and_reason(
    store: Store, tmp_path: Path
) -> None:
    from batcher.export import export_job

    relay = FakeRelay()
    rows = [r for r in mixed_lines(tmp_path) if r["custom_id"] in ("cat-1", "fails", "lost")]
    job_id = ingest(store, tmp_path, rows)
    run(store, job_id, engine_for(store, job_id, relay))
    out = tmp_path / "out.jsonl"
    export_job(store, job_id, out)
    exported = {row["custom_id"]: row for row in map(orjson.loads, out.read_bytes().splitlines())}
    assert len(exported) == 3
    cat = exported["cat-1"]["response"]["body"]
    assert cat["status"] == "SUCCESS" and cat["urls"] and cat["files"] and "U2" in cat["buttons"]
    assert "image generation failed" in exported["fails"]["error"]["message"]
    assert exported["lost"]["error"]["message"] == UNKNOWN_MESSAGE


def test_the_budget_counts_tasks_and_pauses_the_job(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."mj_imagine"]\nper_call = 0.1\n')
    rows = [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat {n}"}) for n in range(5)]
    job_id = ingest(store, tmp_path, rows)
    engine = engine_for(store, job_id, relay, budget=Decimal("0.25"), prices=(str(prices),))
    run(store, job_id, engine)
    assert len(relay.submits) == 2
    with store.session() as session:
        job = q.get_job(session, job_id)
        tasks = session.exec(select(Task)).all()
    assert job.status == "paused" and "budget reached" in (job.last_error or "")
    assert len(tasks) == 2 and all(t.state == "succeeded" for t in tasks)  # polled to their end first
    with store.session() as session:
        q.start_job(session, job_id)
    run(store, job_id, engine_for(store, job_id, relay, budget=Decimal("1"), prices=(str(prices),)))
    assert len(relay.submits) == 5 and all(line.state == "succeeded" for line in all_lines(store))
