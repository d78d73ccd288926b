"""Task lines end to end against the stand-in relay: a mixed file through `batcher run`, with faults.

Every line ends in one terminal result; a submit whose answer was lost is never sent again; the
files saved are the bytes the relay served; the usage report's task counts and cost equal the
relay's own billing (charges less refunds).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_files import expected_file
from batcher.usage import usage_report
from jobs.db import Store
from tests.helpers import RELAY_KEY, all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl
from workers.prices import parse_prices
from workers.taskcalls import UNKNOWN_MESSAGE

RUN_FLAGS = ("--poll-interval", "0.2", "--timeout", "3")


def task_rows(folder: Path) -> list[dict[str, Any]]:
    (folder / "a.png").write_bytes(expected_file("mj-1.png"))
    (folder / "b.png").write_bytes(expected_file("mj-2.png"))
    return [
        batch_line("cat", "/mj/submit/imagine", {"prompt": "a red cat"}),
        batch_line("cat-u2", "/mj/submit/action", {"after": "cat", "button": "U2"}),
        batch_line("cat-v1", "/mj/submit/action", {"after": "cat", "button": "V1"}),
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
    ]


EXPECTED = {
    "cat": "succeeded", "cat-u2": "succeeded", "cat-v1": "succeeded", "blend": "succeeded",
    "describe": "succeeded", "lost": "failed", "busy": "succeeded", "banned": "failed",
    "broken": "failed", "nofile": "succeeded", "song": "succeeded", "words": "succeeded",
    "bad-song": "failed", "clip": "succeeded", "sora": "succeeded", "kling": "succeeded",
}  # fmt: skip


@pytest.fixture
def task_relay(relay: RelayServer) -> RelayServer:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, task_seconds=0.5, hang_seconds=10))
    return relay


def check_run(db: Store, relay: RelayServer, out: Path, rows: list[dict[str, Any]]) -> None:
    lines = {line.custom_id: line for line in all_lines(db)}
    assert {cid: line.state for cid, line in lines.items()} == EXPECTED, {
        cid: line.last_error for cid, line in lines.items()
    }
    assert lines["lost"].last_error == UNKNOWN_MESSAGE
    exported = read_jsonl(out)
    assert sorted(r["custom_id"] for r in exported) == sorted(r["custom_id"] for r in rows)
    for row in exported:
        body = row["response"]["body"] if row["response"] else None
        if row["error"] is None:
            assert body["urls"] or body["task"]["data"]["text"], row  # lyrics are text
            check_files(body)
    nofile = next(r["response"]["body"] for r in exported if r["custom_id"] == "nofile")
    assert nofile["download_errors"] and not nofile["files"]
    check_billing(db, relay)


def check_files(body: dict[str, Any]) -> None:
    """Every file saved holds what the relay served at its URL."""
    fetched = [u for u in body["urls"] if u not in body.get("download_errors", {})]
    assert len(body["files"]) == len(fetched)
    for url, path in zip(fetched, body["files"], strict=True):
        name = url.rsplit("/", 1)[1].split("?")[0]
        if url.endswith("/content"):  # OpenAI-style video: fetched from the relay, with the key
            name = f"video-{url.split('/')[-2]}.mp4"
        assert Path(path).read_bytes() == expected_file(name), url


def check_billing(db: Store, relay: RelayServer) -> None:
    """Usage's cost (and possibly billed part) equals the relay's charges less refunds."""
    pricing = httpx.get(relay.url.removesuffix("/v1") + "/api/pricing").json()
    book = parse_prices(json.loads(json.dumps(pricing), parse_float=Decimal), source="relay")
    report = usage_report(db, [1], prices=book)
    billing = relay.stats()["tasks"]["billing"]
    lost = (
        Decimal(billing["per_model"]["mj_imagine"]["charged_usd"])
        / billing["per_model"]["mj_imagine"]["charges"]
    )
    assert report.total.unknown_calls == 1 and report.total.unknown_cost == lost
    assert report.total.cost + report.total.unknown_cost == Decimal(billing["net_usd"])
    assert report.total.calls == len(EXPECTED) and len(all_attempts(db)) == len(EXPECTED)


def test_a_mixed_task_file_runs_end_to_end(
    env: str, db: Store, task_relay: RelayServer, tmp_path: Path
) -> None:
    rows = task_rows(tmp_path)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(write_jsonl(tmp_path / "in.jsonl", rows)), "-o", str(out), *RUN_FLAGS)
    assert result.exit_code == 3, result.stderr  # some lines failed, as they should
    check_run(db, task_relay, out, rows)
    submitted = task_relay.stats()["tasks"]["billing"]["per_model"]["mj_imagine"]["charges"]
    assert submitted == 5  # cat, lost (once: its lost answer was not sent again), busy, broken, nofile
