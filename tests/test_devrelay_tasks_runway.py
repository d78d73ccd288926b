"""The stand-in relay's Runway routes over HTTP: the official shape, CometAPI's, the reverse one, billing."""

from __future__ import annotations

import httpx

from batcher.devrelay import RelayServer
from batcher.devrelay.tasks_files import expected_file
from tests.helpers import post_ok as post
from tests.helpers import task_relay_fixtures

KEY = "sk-runway"
IMAGE = "https://example.com/cat.png"

relay, http = task_relay_fixtures(KEY, headers={"X-Runway-Version": "2024-11-06"})


def test_the_official_shape_walks_its_statuses_and_serves_the_output(
    relay: RelayServer, http: httpx.Client
) -> None:
    made = post(http, "/runwayml/v1/image_to_video", promptImage=IMAGE, promptText="a cat", duration=10)
    assert list(made) == ["id"]
    path = f"/runwayml/v1/tasks/{made['id']}"
    seen = []
    for _ in range(4):
        seen.append(http.get(path).json()["status"])
        relay.advance_tasks(12)
    running = http.get(path).json()
    assert seen == ["PENDING", "PENDING", "THROTTLED", "RUNNING"] and 0 < running["progress"] < 1
    relay.advance_tasks(100)
    done = http.get(path).json()
    assert done["status"] == "SUCCEEDED" and "failure" not in done
    assert httpx.get(done["output"][0]).content == expected_file(f"runway-{made['id']}.mp4")
    per_model = relay.stats()["tasks"]["billing"]["per_model"]
    assert per_model["runwayml_gen3a_turbo_10"]["charged_usd"] == "0.5"


def test_cometapi_wraps_the_task_and_knows_it_only_after_a_while(
    relay: RelayServer, http: httpx.Client
) -> None:
    made = post(http, "/runwayml/v1/image_to_video", promptImage=IMAGE, promptText="x [[fault:cometapi]]")
    assert made["status"] == "PENDING"
    path = f"/runwayml/v1/tasks/{made['id']}"
    early = http.get(path)
    assert (early.status_code, early.json()["code"]) == (400, "task_not_exist")
    relay.advance_tasks(100)
    wrapped = http.get(path).json()
    assert (wrapped["code"], wrapped["data"]["status"], wrapped["data"]["action"]) == (
        "success", "SUCCESS", "IMAGE_TO_VIDEO")  # fmt: skip
    assert wrapped["data"]["data"]["output"][0].endswith(f"runway-{made['id']}.mp4")
    assert relay.stats()["tasks"]["billing"]["per_model"]["runwayml_gen3a_turbo_5"]["charges"] == 1


def test_the_reverse_shape_failures_refunds_and_refusals(relay: RelayServer, http: httpx.Client) -> None:
    options = {"text_prompt": "a cat swims", "seconds": 10}
    made = post(http, "/runway/tasks", taskType="gen3a_turbo", internal=False, options=options)["task"]
    bad = post(http, "/runway/tasks", taskType="gen2", options={"text_prompt": "x [[fault:task_fail]]"})[
        "task"
    ]
    assert (made["status"], made["artifacts"]) == ("PENDING", [])
    relay.advance_tasks(100)
    done = http.get(f"/runway/tasks/{made['id']}").json()["task"]
    assert done["status"] == "SUCCEEDED"
    assert httpx.get(done["artifacts"][0]["url"]).content == expected_file(f"runway-{made['id']}.mp4")
    failed = http.get(f"/runway/tasks/{bad['id']}").json()["task"]
    assert failed["status"] == "FAILED" and failed["error"]["message"]
    assert (
        http.get(f"/runwayml/v1/tasks/{made['id']}").json()["code"] == "task_not_exist"
    )  # not the other shape
    billing = relay.stats()["tasks"]["billing"]
    assert (billing["charged_usd"], billing["refunded_usd"], billing["net_usd"]) == ("0.5", "0.2", "0.3")
    cases = [("/runway/tasks", {"taskType": "gen9", "options": {"text_prompt": "x"}}),
             ("/runway/tasks", {"taskType": "gen2", "options": {"text_prompt": "x", "seconds": 7}}),
             ("/runwayml/v1/image_to_video", {"promptText": "no image"}),
             ("/runwayml/v1/image_to_video", {"promptImage": {"blob": "abc"}}),
             ("/runway/tasks", {"taskType": "gen2", "options": {"init_image": "cat.png"}}),
             ("/runwayml/v1/image_to_video", {"promptImage": IMAGE, "model": "gen9"})]  # fmt: skip
    for path, body in cases:
        assert http.post(path, json=body).status_code == 400, body
    assert relay.stats()["tasks"]["billing"]["charges"] == 2
