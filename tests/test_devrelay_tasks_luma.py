"""The stand-in relay's Luma routes over HTTP: create, extend, the three spellings, shapes, billing."""

from __future__ import annotations

import httpx

from batcher.devrelay import RelayServer
from batcher.devrelay.tasks_files import expected_file
from tests.helpers import post_ok as post
from tests.helpers import task_relay_fixtures

KEY = "sk-luma"

relay, http = task_relay_fixtures(KEY)


def test_a_generation_walks_pending_processing_completed_and_serves_its_files(
    relay: RelayServer, http: httpx.Client
) -> None:
    made = post(http, "/luma/generations", user_prompt="a cat dances", aspect_ratio="16:9")
    assert (made["state"], made["video"], made["prompt"]) == ("pending", None, "a cat dances")
    path = f"/luma/generations/{made['id']}"
    relay.advance_tasks(50)
    assert http.get(path).json()["state"] == "processing"
    relay.advance_tasks(50)
    done = http.get(path).json()
    assert done["state"] == "completed" and done["failure_reason"] is None
    video = done["video"]
    assert httpx.get(video["download_url"]).content == expected_file(f"luma-{made['id']}.mp4")
    assert httpx.get(video["url"]).content == expected_file(f"luma-{made['id']}-wm.mp4")
    assert httpx.get(done["thumbnail"]["url"]).headers["content-type"] == "image/png"
    assert relay.stats()["tasks"]["billing"]["per_model"]["luma_video_api"]["charged_usd"] == "0.3"


def test_extend_needs_a_completed_generation_of_the_caller(relay: RelayServer, http: httpx.Client) -> None:
    first = post(http, "/dream-machine/v1/generations", prompt="waves")
    early = http.post(f"/dream-machine/v1/generations/{first['id']}/extend", json={"user_prompt": "more"})
    assert (early.status_code, early.json()["code"]) == (400, "invalid_request")
    relay.advance_tasks(100)
    longer = post(http, f"/luma/generations/{first['id']}/extend", user_prompt="and more waves")
    assert longer["state"] == "pending" and longer["id"] != first["id"]
    assert (
        http.post("/luma/generations/nope/extend", json={"user_prompt": "x"}).json()["code"]
        == "task_not_exist"
    )
    billing = relay.stats()["tasks"]["billing"]
    assert billing["per_model"]["luma_video_extend_api"]["charged_usd"] == "0.25"
    assert billing["charges"] == 2  # the refused extends were never charged


def test_the_artifact_shape_failures_and_refunds(relay: RelayServer, http: httpx.Client) -> None:
    newer = post(http, "/luma/v1/generations", user_prompt="a fox [[fault:luma_artifact]]")
    failed = post(http, "/luma/generations", user_prompt="a fox [[fault:task_fail]]")
    relay.advance_tasks(100)
    shown = http.get(f"/luma/v1/generations/{newer['id']}").json()
    assert "video" not in shown and shown["request"]["prompt"].startswith("a fox")
    assert shown["artifact"]["video"]["download_url"].endswith(f"luma-{newer['id']}.mp4")
    lost = http.get(f"/luma/generations/{failed['id']}").json()
    assert (lost["state"], lost["video"]) == ("failed", None) and "moderation" in lost["failure_reason"]
    billing = relay.stats()["tasks"]["billing"]
    assert (billing["charged_usd"], billing["refunded_usd"], billing["net_usd"]) == ("0.6", "0.3", "0.3")
    refused = http.post("/luma/generations", json={"aspect_ratio": "16:9"})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_request")
