"""The stand-in relay's Suno routes over HTTP: envelope, lifecycle, clips, batch fetch, pre-charge and refund."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_files import expected_file
from tests.helpers import task_relay_fixtures

KEY = "sk-suno"

relay, http = task_relay_fixtures(KEY, hang_seconds=0.2)


def submit(http: httpx.Client, action: str, **body: Any) -> str:
    answer = http.post(f"/suno/submit/{action}", json=body)
    assert answer.status_code == 200
    envelope = answer.json()
    assert (envelope["code"], envelope["message"]) == ("success", "")
    assert envelope["data"].startswith("task_") and len(envelope["data"]) == 37
    return str(envelope["data"])


def fetch(http: httpx.Client, task_id: str) -> dict[str, Any]:
    answer = http.get(f"/suno/fetch/{task_id}")
    assert answer.status_code == 200
    return dict(answer.json()["data"])


def test_music_goes_from_not_start_to_two_complete_clips_with_served_files(
    relay: RelayServer, http: httpx.Client
) -> None:
    task_id = submit(http, "music", gpt_description_prompt="a song about rain")
    first = fetch(http, task_id)
    assert (first["status"], first["progress"], first["data"], first["action"]) == (
        "NOT_START",
        "0%",
        None,
        "MUSIC",
    )
    statuses = []
    for _ in range(4):
        relay.advance_tasks(12)
        statuses.append(fetch(http, task_id)["status"])
    assert statuses == ["SUBMITTED", "QUEUED", "IN_PROGRESS", "IN_PROGRESS"]
    assert [c["status"] for c in fetch(http, task_id)["data"]] == ["streaming", "streaming"]
    relay.advance_tasks(100)
    final = fetch(http, task_id)
    assert (final["status"], final["progress"], final["fail_reason"]) == ("SUCCESS", "100%", "")
    assert final["properties"]["input"] == "a song about rain"
    clips = final["data"]
    assert len(clips) == 2 and {c["status"] for c in clips} == {"complete"}
    for clip in clips:
        for field in ("audio_url", "video_url", "image_url", "image_large_url"):
            served = httpx.get(clip[field])
            assert served.content == expected_file(clip[field].rsplit("/", 1)[1])
    assert httpx.get(clips[0]["audio_url"]).headers["content-type"] == "audio/mpeg"
    assert clips[0]["model_name"] == "chirp-v3-0"


def test_lyrics_and_the_batch_fetch(relay: RelayServer, http: httpx.Client) -> None:
    lyrics = submit(http, "LYRICS", prompt="rain on a tin roof")
    music = submit(http, "music", prompt="[Verse] la", title="Rain", tags="folk", mv="chirp-v3-5")
    relay.advance_tasks(100)
    batch = http.post("/suno/fetch", json={"ids": [lyrics, music, "task_unknown"]}).json()
    assert batch["code"] == "success"
    tasks = {t["task_id"]: t for t in batch["data"]}
    assert set(tasks) == {lyrics, music}
    assert tasks[lyrics]["data"]["text"].startswith("[Verse]\nrain on a tin roof")
    assert tasks[music]["data"][0]["title"] == "Rain"
    assert http.post("/suno/fetch", json={"ids": []}).json() == {"code": "success", "message": "", "data": []}
    per_model = relay.stats()["tasks"]["billing"]["per_model"]
    assert (per_model["suno_lyrics"]["charged_usd"], per_model["suno_music"]["charged_usd"]) == (
        "0.01",
        "0.1",
    )


def test_errors_are_task_errors(relay: RelayServer, http: httpx.Client) -> None:
    missing = http.get("/suno/fetch/task_nope")
    assert (missing.status_code, missing.json()) == (400, {"code": "task_not_exist", "message": "task_not_exist",
                                                           "data": None})  # fmt: skip
    assert http.post("/suno/submit/lyrics", json={}).json()["message"] == "prompt_empty"
    assert http.post("/suno/submit/cover", json={"prompt": "x"}).json()["message"] == "invalid_action"
    full = http.post("/suno/submit/music", json={"prompt": "x [[fault:queue_full]]"})
    assert (full.status_code, full.json()["message"]) == (429, "当前分组上游负载已饱和，请稍后再试")
    assert relay.stats()["tasks"]["billing"]["charges"] == 0


def test_a_failed_song_is_refunded_and_says_why(relay: RelayServer, http: httpx.Client) -> None:
    failed = submit(http, "music", prompt="like a famous singer [[fault:task_fail]]")
    fine = submit(http, "music", prompt="rain")
    assert relay.stats()["tasks"]["billing"]["charged_usd"] == "0.2"
    relay.advance_tasks(100)
    task = fetch(http, failed)
    assert (task["status"], task["fail_reason"], task["quota"]) == (
        "FAILURE",
        "Song Description contains artist name",
        0,
    )
    assert task["data"][0]["metadata"]["error_message"] == task["fail_reason"]
    assert fetch(http, fine)["quota"] == 50_000
    billing = relay.stats()["tasks"]["billing"]
    assert (billing["refunded_usd"], billing["net_usd"], billing["refunds"]) == ("0.1", "0.1", 1)


def test_a_stuck_song_fails_at_the_relays_deadline(relay: RelayServer, http: httpx.Client) -> None:
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, task_timeout=600))
    stuck = submit(http, "music", prompt="rain [[fault:task_stuck]]")
    relay.advance_tasks(300)
    assert fetch(http, stuck)["status"] == "IN_PROGRESS"
    relay.advance_tasks(300)
    assert fetch(http, stuck)["fail_reason"] == "任务超时（10分钟）"
    assert relay.stats()["tasks"]["billing"]["net_usd"] == "0"


def test_a_dropped_submit_answer_still_charges(relay: RelayServer, http: httpx.Client) -> None:
    with pytest.raises(httpx.TransportError):
        http.post("/suno/submit/music", json={"prompt": "x [[fault:submit_timeout]]"})
    tasks = relay.stats()["tasks"]
    assert (tasks["submitted"], tasks["billing"]["charged_usd"]) == (1, "0.1")
