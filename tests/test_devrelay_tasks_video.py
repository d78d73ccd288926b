"""The stand-in relay's video routes over HTTP: unified, OpenAI-style and Kling, ratios billing, old URL place."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_files import expected_file
from tests.helpers import dto_ok as dto
from tests.helpers import post_ok as submit
from tests.helpers import task_relay_fixtures

KEY = "sk-video"

relay, http = task_relay_fixtures(KEY)


def test_unified_submit_answers_openai_video_and_the_fetch_walks_new_apis_progress(
    relay: RelayServer, http: httpx.Client
) -> None:
    answer = http.post("/v1/video/generations", json={"model": "kling-v1", "prompt": "a cat", "duration": 10})
    video = answer.json()
    assert (video["object"], video["status"], video["progress"], video["id"]) == (
        "video",
        "queued",
        0,
        video["task_id"],
    )
    assert json.loads(answer.headers["X-New-Api-Other-Ratios"]) == {"seconds": 10.0, "size": 1.0}
    path = f"/v1/video/generations/{video['id']}"
    seen = [(dto(http, path)["status"], dto(http, path)["progress"])]
    for _ in range(3):
        relay.advance_tasks(12)
        seen.append((dto(http, path)["status"], dto(http, path)["progress"]))
    assert seen == [("NOT_START", "0%"), ("SUBMITTED", "10%"), ("QUEUED", "20%"), ("IN_PROGRESS", "30%")]
    relay.advance_tasks(100)
    task = dto(http, path)
    assert (task["status"], task["action"], task["fail_reason"]) == ("SUCCESS", "textGenerate", "")
    assert task["data"]["data"]["task_status"] == "succeed"
    assert httpx.get(task["result_url"]).content == expected_file(task["result_url"].rsplit("/", 1)[1])
    assert relay.stats()["tasks"]["billing"]["per_task"][video["id"]]["charged_usd"] == "0.5"  # 0.05 × 10 s


def test_openai_videos_route_object_and_content(relay: RelayServer, http: httpx.Client) -> None:
    video = submit(http, "/v1/videos", model="sora-2-pro", prompt="waves", size="1792x1024", seconds="8")
    assert (video["seconds"], video["size"]) == ("8", "1792x1024")
    assert http.get(f"/v1/videos/{video['id']}/content").status_code == 400
    relay.advance_tasks(50)
    assert http.get(f"/v1/videos/{video['id']}").json()["status"] == "in_progress"
    relay.advance_tasks(50)
    done = http.get(f"/v1/videos/{video['id']}").json()
    assert (done["status"], done["progress"]) == ("completed", 100)
    content = http.get(f"/v1/videos/{video['id']}/content")
    assert content.headers["content-type"] == "video/mp4"
    assert content.content == expected_file(f"video-{video['id']}.mp4")
    assert relay.stats()["tasks"]["billing"]["charged_usd"] == "4"  # int(0.3 × 8 s × 1.666667 × 500000) quota
    form = http.post("/v1/videos", data={"model": "sora-2", "prompt": "form"}, files={"x": ("a.txt", b"1")})
    assert form.json()["seconds"] == "4"
    assert http.post("/v1/videos", json={"prompt": "x"}).json()["code"] == "missing_model"


def test_kling_native_routes(relay: RelayServer, http: httpx.Client) -> None:
    text = submit(http, "/kling/v1/videos/text2video", model_name="kling-v1-6", prompt="a dog", duration="5")
    image = submit(http, "/kling/v1/videos/image2video", image="https://example.com/a.png", prompt="")
    relay.advance_tasks(100)
    assert dto(http, f"/kling/v1/videos/text2video/{text['id']}")["result_url"].endswith(
        f"video-{text['id']}.mp4"
    )
    assert dto(http, f"/kling/v1/videos/image2video/{image['id']}")["action"] == "generate"
    assert http.get(f"/v1/videos/{text['id']}").json()["metadata"]["url"].endswith(".mp4")
    refused = http.post("/kling/v1/videos/image2video", json={"prompt": "no image"})
    assert (refused.status_code, refused.json()["code"]) == (400, "task_failed")


def test_failures_refunds_and_the_old_url_place(relay: RelayServer, http: httpx.Client) -> None:
    failed = submit(http, "/v1/video/generations", model="kling-v1", prompt="x [[fault:task_fail]]")
    legacy = submit(http, "/v1/video/generations", model="kling-v1", prompt="x [[fault:legacy_url]]")
    missing = submit(http, "/v1/video/generations", model="kling-v1", prompt="x [[fault:unfetchable]]")
    relay.advance_tasks(100)
    failure = dto(http, f"/v1/video/generations/{failed['id']}")
    assert (failure["status"], failure["fail_reason"], failure["quota"]) == (
        "FAILURE", "Failure to pass the risk control system", 0)  # fmt: skip
    assert http.get(f"/v1/videos/{failed['id']}").json()["error"]["message"] == failure["fail_reason"]
    old = dto(http, f"/v1/video/generations/{legacy['id']}")
    assert "result_url" not in old and old["fail_reason"].endswith(f"video-{legacy['id']}.mp4")
    assert httpx.get(dto(http, f"/v1/video/generations/{missing['id']}")["result_url"]).status_code == 404
    billing = relay.stats()["tasks"]["billing"]
    assert (billing["charged_usd"], billing["refunded_usd"], billing["net_usd"]) == ("0.75", "0.25", "0.5")


def test_refusals_are_task_errors_and_never_charged(relay: RelayServer, http: httpx.Client) -> None:
    cases = [({"model": "kling-v1", "prompt": " "}, "invalid_request"),
             ({"model": "kling-v1", "prompt": "x", "duration": 4000}, "invalid_request"),
             ({"model": "unknown-model", "prompt": "x"}, "model_price_error"),
             ({"model": "kling-v1", "prompt": "x [[fault:banned]]"}, "task_failed")]  # fmt: skip
    for body, code in cases:
        answer = http.post("/v1/video/generations", json=body)
        assert (answer.status_code, answer.json()["code"], answer.json()["data"]) == (400, code, None)
    assert http.get("/v1/video/generations/task_nope").json()["code"] == "task_not_exist"
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, balance_usd=0.1))
    poor = http.post("/v1/video/generations", json={"model": "sora-2", "prompt": "x", "duration": 10})
    assert (poor.status_code, poor.json()["code"]) == (403, "insufficient_user_quota")
    assert relay.stats()["tasks"]["billing"]["charges"] == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/kling/v1/videos/text2video", {"model_name": "kling-v1-6", "duration": "10"}),
        ("/v1/video/generations", {"model": "kling-v1-6", "duration": 10}),
    ],
)
def test_a_short_kling_video_is_re_priced_on_success(
    relay: RelayServer, http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """Half the video, half the units: the TaskDto's quota and the ledger show the final charge."""
    video = submit(http, path, prompt="a cat [[fault:short_video]]", **body)
    fetch = f"{path}/{video['id']}"
    assert dto(http, fetch)["quota"] == 350_000  # 0.07 × 10 s pre-charged
    relay.advance_tasks(100)
    task = dto(http, fetch)
    assert (task["status"], task["quota"]) == ("SUCCESS", 175_000)
    assert task["data"]["data"]["final_unit_deduction"] == "1"  # 5 s made, of 10 asked
    assert task["data"]["data"]["task_result"]["videos"][0]["duration"] == "5"
    bill = relay.stats()["tasks"]["billing"]["per_task"][video["id"]]
    assert (bill["charged_usd"], bill["adjusted_usd"], bill["net_usd"]) == ("0.7", "-0.35", "0.35")


def test_a_kling_video_as_asked_or_billed_per_call_keeps_its_pre_charge(
    relay: RelayServer, http: httpx.Client
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, task_price_patches=("kling-v1",)))
    path = "/kling/v1/videos/text2video"
    whole = submit(http, path, model_name="kling-v1-6", prompt="a cat", duration="10")
    patched = submit(http, path, model_name="kling-v1", prompt="a cat [[fault:short_video]]", duration="10")
    relay.advance_tasks(100)
    assert dto(http, f"{path}/{whole['id']}")["data"]["data"]["final_unit_deduction"] == "2"
    assert [dto(http, f"{path}/{v['id']}")["quota"] for v in (whole, patched)] == [350_000, 250_000]
    assert relay.stats()["tasks"]["billing"]["adjusted_quota"] == 0
