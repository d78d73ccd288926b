"""The stand-in relay's Midjourney routes over HTTP: submit codes, lifecycle, buttons, modal, billing, faults.

Most tests step the tasks' clock themselves (``RelayServer.advance_tasks``, tasks lasting 100 s),
so every stage is exact; one runs a whole lifecycle on the wall clock.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.enforce import LimitRules
from batcher.devrelay.tasks_files import expected_file
from batcher.devrelay.tasks_mj_view import action_of
from tests.helpers import task_relay_fixtures
from workers.prices import parse_prices

KEY = "sk-mj"

relay, http = task_relay_fixtures(KEY, hang_seconds=0.2)


def imagine(http: httpx.Client, prompt: str = "a red cat") -> str:
    answer = http.post("/mj/submit/imagine", json={"prompt": prompt})
    assert answer.status_code == 200
    assert answer.json()["code"] == 1
    return str(answer.json()["result"])


def fetch(http: httpx.Client, task_id: str) -> dict[str, Any]:
    answer = http.get(f"/mj/task/{task_id}/fetch")
    assert answer.status_code == 200
    return dict(answer.json())


def done(relay: RelayServer, http: httpx.Client, task_id: str) -> dict[str, Any]:
    relay.advance_tasks(100)
    task = fetch(http, task_id)
    assert task["status"] == "SUCCESS"
    return task


def button(task: dict[str, Any], label: str) -> str:
    return next(str(b["customId"]) for b in task["buttons"] if b["label"] == label)


def test_imagine_goes_through_every_status_to_buttons_and_a_served_image(
    relay: RelayServer, http: httpx.Client
) -> None:
    task_id = imagine(http)
    assert task_id.isdigit()
    first = fetch(http, task_id)
    assert (first["status"], first["progress"], first["imageUrl"], first["buttons"]) == ("", "0%", "", None)
    relay.advance_tasks(15)
    assert fetch(http, task_id)["status"] == "SUBMITTED"
    relay.advance_tasks(30)
    running = fetch(http, task_id)
    assert (running["status"], running["progress"]) == ("IN_PROGRESS", "21%")
    assert "?rand=" in running["imageUrl"]
    final = done(relay, http, task_id)
    assert final["progress"] == "100%"
    assert final["prompt"] == "a red cat"
    assert [b["label"] for b in final["buttons"]] == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
    assert action_of(button(final, "U2")) == ("UPSCALE", 2)
    image = httpx.get(final["imageUrl"])
    assert image.content == expected_file(final["imageUrl"].rsplit("/", 1)[1])
    assert image.headers["content-type"] == "image/png"
    assert "authorization" not in {k.lower() for k in relay.stats()["file_requests"][-1]}


def test_list_by_condition_returns_the_callers_tasks_only(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(task_seconds=100))  # any key: each sees its own tasks
    root = relay.url.removesuffix("/v1")
    with httpx.Client(base_url=root, headers={"Authorization": "Bearer sk-a"}) as a:
        ids = [imagine(a, "one"), imagine(a, "two")]
        with httpx.Client(base_url=root, headers={"Authorization": "Bearer sk-b"}) as b:
            other = imagine(b)
            assert b.get(f"/mj/task/{ids[0]}/fetch").status_code == 400
        listed = a.post("/mj/task/list-by-condition", json={"ids": [*ids, other, "404"]}).json()
        assert sorted(t["id"] for t in listed) == sorted(ids)
        assert a.post("/mj/task/list-by-condition", json={}).json() == []
        missing = a.get("/mj/task/1/fetch")
    assert missing.status_code == 400
    assert missing.json() == {"description": "task_no_found ", "type": "upstream_error", "code": 4}


@pytest.mark.parametrize(("fault", "rewrite", "code"), [("mj_queued", True, 1), ("mj_queued", False, 22),
                                                         ("mj_existed", True, 1), ("mj_existed", False, 21)])  # fmt: skip
def test_codes_22_and_21_are_rewritten_to_1_as_new_api_does(
    relay: RelayServer, http: httpx.Client, fault: str, rewrite: bool, code: int
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, mj_rewrite=rewrite))
    answer = http.post("/mj/submit/imagine", json={"prompt": f"cat [[fault:{fault}]]"}).json()
    assert answer["code"] == code
    expected = "SUCCESS" if fault == "mj_existed" else ""
    assert fetch(http, answer["result"])["status"] == expected
    assert relay.stats()["tasks"]["billing"]["charged_usd"] == "0.1"


def test_follow_up_actions_need_a_finished_origin_and_one_of_its_buttons(
    relay: RelayServer, http: httpx.Client
) -> None:
    origin = imagine(http)
    early = http.post("/mj/submit/action", json={"taskId": origin, "customId": "MJ::JOB::upsample::2::x"})
    assert early.json()["description"] == "task_status_not_success "
    grid = done(relay, http, origin)
    upscale = http.post("/mj/submit/action", json={"taskId": origin, "customId": button(grid, "U2")}).json()
    assert upscale["code"] == 1
    wrong = http.post("/mj/submit/action", json={"taskId": origin, "customId": "MJ::JOB::upsample::2::other"})
    assert wrong.json()["code"] == 4
    unknown = http.post("/mj/submit/action", json={"taskId": origin, "customId": "MJ::BOOKMARK::1"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == "unknown_action:MJ::BOOKMARK::1"
    change = http.post("/mj/submit/change", json={"taskId": origin, "action": "VARIATION", "index": 3}).json()
    simple = http.post("/mj/submit/simple-change", json={"content": f"{origin} U4"}).json()
    relay.advance_tasks(100)
    tasks = {t["id"]: t for t in http.post("/mj/task/list-by-condition",
                                           json={"ids": [upscale["result"], change["result"], simple["result"]]}).json()}  # fmt: skip
    assert [tasks[i["result"]]["action"] for i in (upscale, change, simple)] == [
        "UPSCALE",
        "VARIATION",
        "UPSCALE",
    ]
    assert tasks[upscale["result"]]["prompt"] == "a red cat"  # the origin's prompt, as new-api
    assert "Vary (Region)" in [b["label"] for b in tasks[upscale["result"]]["buttons"]]
    by_model = relay.stats()["tasks"]["billing"]["per_model"]
    assert (by_model["mj_imagine"]["charged_usd"], by_model["mj_upscale"]["charged_usd"]) == ("0.1", "0.1")
    assert by_model["mj_variation"]["charges"] == 1


def test_inpaint_answers_21_waits_in_modal_and_goes_on_after_the_modal_submit(
    relay: RelayServer, http: httpx.Client
) -> None:
    grid = done(relay, http, imagine(http))
    upscale = http.post(
        "/mj/submit/action", json={"taskId": grid["id"], "customId": button(grid, "U1")}
    ).json()
    single = done(relay, http, upscale["result"])
    inpaint = http.post("/mj/submit/action", json={"taskId": single["id"],
                                                   "customId": button(single, "Vary (Region)")}).json()  # fmt: skip
    assert (inpaint["code"], inpaint["description"]) == (21, "Waiting for window confirm")
    relay.advance_tasks(50)
    assert fetch(http, inpaint["result"])["status"] == "MODAL"
    no_mask = http.post("/mj/submit/modal", json={"taskId": inpaint["result"], "prompt": "a hat"}).json()
    assert no_mask["code"] == 4
    confirmed = http.post("/mj/submit/modal", json={"taskId": inpaint["result"], "maskBase64": "data:,x"})
    assert confirmed.json() == {"code": 1, "description": "提交成功", "result": inpaint["result"],
                                "properties": {"discordInstanceId": "1118138338562560102"}}  # fmt: skip
    assert fetch(http, inpaint["result"])["status"] == ""
    assert done(relay, http, inpaint["result"])["action"] == "INPAINT"
    bill = relay.stats()["tasks"]["billing"]["per_task"][inpaint["result"]]
    assert (bill["model"], bill["charged_usd"]) == ("mj_modal", "0.1")


def test_failed_and_timed_out_tasks_are_refunded_and_refused_submits_never_charged(
    relay: RelayServer, http: httpx.Client
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, task_timeout=500))
    failing = imagine(http, "cat [[fault:task_fail]]")
    stuck = imagine(http, "cat [[fault:task_stuck]]")
    full = http.post("/mj/submit/imagine", json={"prompt": "cat [[fault:queue_full]]"}).json()
    banned = http.post("/mj/submit/imagine", json={"prompt": "nude [[fault:banned]]"}).json()
    assert (full["code"], banned["code"], banned["properties"]["bannedWord"]) == (23, 24, "nude")
    relay.advance_tasks(100)
    failure = fetch(http, failing)
    assert (failure["status"], failure["progress"]) == ("FAILURE", "100%")
    assert failure["failReason"] == "Request cancelled due to image filters"
    assert (fetch(http, stuck)["status"], fetch(http, stuck)["progress"]) == ("IN_PROGRESS", "37%")
    relay.advance_tasks(400)
    assert fetch(http, stuck)["failReason"] == "上游任务超时（超过1小时）"
    billing = relay.stats()["tasks"]["billing"]
    assert (billing["charges"], billing["refunds"], billing["net_usd"]) == (2, 2, "0")
    assert billing["per_task"][failing]["refund_reason"] == "Request cancelled due to image filters"


def test_a_lost_submit_answer_leaves_the_task_recorded_and_charged(
    relay: RelayServer, http: httpx.Client
) -> None:
    for kind in ("submit_reset", "submit_timeout"):
        with pytest.raises(httpx.TransportError):
            http.post("/mj/submit/imagine", json={"prompt": f"cat [[fault:{kind}]]"})
    stats = relay.stats()
    assert stats["tasks"]["submitted"] == 2
    assert stats["tasks"]["billing"]["charged_usd"] == "0.2"
    assert (stats["by_status"]["reset"], stats["by_status"]["hang"]) == (1, 1)


def test_unfetchable_results_answer_404_and_slow_ones_never_arrive(
    relay: RelayServer, http: httpx.Client
) -> None:
    missing, slow = imagine(http, "cat [[fault:unfetchable]]"), imagine(http, "cat [[fault:result_timeout]]")
    relay.advance_tasks(100)
    assert httpx.get(fetch(http, missing)["imageUrl"]).status_code == 404
    with pytest.raises(httpx.TransportError):
        httpx.get(fetch(http, slow)["imageUrl"], timeout=5)


def test_every_submit_route_answers_and_is_priced_by_its_model(
    relay: RelayServer, http: httpx.Client
) -> None:
    image = "data:image/png;base64,AAAA"
    calls = [("/mj/submit/describe", {"base64": image}), ("/mj/submit/blend", {"base64Array": [image, image]}),
             ("/mj/submit/shorten", {"prompt": "a long prompt here"}), ("/mj/insight-face/swap",
             {"sourceBase64": image, "targetBase64": image}), ("/mj-fast/mj/submit/imagine", {"prompt": "x"})]  # fmt: skip
    ids = [http.post(path, json=body).json()["result"] for path, body in calls]
    relay.advance_tasks(100)
    tasks = {t["id"]: t for t in http.post("/mj/task/list-by-condition", json={"ids": ids}).json()}
    assert [tasks[i]["action"] for i in ids] == ["DESCRIBE", "BLEND", "SHORTEN", "SWAP_FACE", "IMAGINE"]
    assert tasks[ids[0]]["properties"]["finalPrompt"].startswith("1️⃣")
    upload = http.post("/mj/submit/upload-discord-images", json={"base64Array": [image]}).json()
    assert upload["code"] == 1 and len(upload["result"]) == 1
    assert http.post("/mj/submit/blend", json={"base64Array": [image]}).json()["code"] == 4
    assert http.post("/mj/submit/imagine", json={}).json()["description"] == "prompt_is_required "
    billing = relay.stats()["tasks"]["billing"]
    assert billing["charged_usd"] == "0.45"  # describe, swap and upload 0.05; blend, shorten, imagine 0.1
    assert set(billing["per_model"]) == {"mj_describe", "mj_blend", "mj_shorten", "swap_face", "mj_imagine",
                                         "mj_upload"}  # fmt: skip


def test_mj_api_secret_is_the_key_when_there_is_no_bearer(relay: RelayServer) -> None:
    root = relay.url.removesuffix("/v1")
    body = {"prompt": "x"}
    proxy = httpx.post(root + "/mj/submit/imagine", json=body,
                       headers={"Authorization": "midjourney-proxy", "mj-api-secret": KEY})  # fmt: skip
    assert proxy.json()["code"] == 1
    wrong = httpx.post(root + "/mj/submit/imagine", json=body, headers={"mj-api-secret": "sk-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


def test_the_pricing_answer_is_new_apis_and_prices_the_task_models() -> None:
    with RelayServer(RelayConfig()) as server:
        pricing = httpx.get(server.url.removesuffix("/v1") + "/api/pricing").json()
    book = parse_prices(json.loads(json.dumps(pricing), parse_float=Decimal), source="relay")
    price = book.lookup("mj_imagine")
    assert price is not None and getattr(price, "model_price", None) == Decimal("0.1")
    assert {"swap_face", "suno_music", "mj_upscale"} <= {r["model_name"] for r in pricing["data"]}


def test_a_whole_lifecycle_on_the_wall_clock() -> None:
    with RelayServer(RelayConfig(task_seconds=0.5)) as server:
        root = server.url.removesuffix("/v1")
        with httpx.Client(base_url=root, headers={"Authorization": "Bearer sk-x"}) as http:
            task_id = imagine(http)
            seen = [fetch(http, task_id)["status"]]
            for _ in range(200):  # the lifecycle lasts half a second; the bound only stops a broken relay
                if seen[-1] == "SUCCESS":
                    break
                time.sleep(0.02)
                seen.append(fetch(http, task_id)["status"])
    order = ["", "SUBMITTED", "IN_PROGRESS", "SUCCESS"]
    assert seen[-1] == "SUCCESS"
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)


def test_the_image_proxy_serves_a_finished_task_without_a_key(relay: RelayServer, http: httpx.Client) -> None:
    task_id = imagine(http)
    root = relay.url.removesuffix("/v1")
    assert httpx.get(f"{root}/mj/image/{task_id}").status_code == 404  # not finished yet
    done(relay, http, task_id)
    image = httpx.get(f"{root}/mj/image/{task_id}")
    assert (image.status_code, image.content) == (200, expected_file(f"mj-{task_id}.png"))


def test_random_task_faults_and_the_limits_apply_to_task_routes(
    relay: RelayServer, http: httpx.Client
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, fault_rate=1.0, faults=("task_fail",)))
    failing = imagine(http)
    relay.advance_tasks(100)
    assert fetch(http, failing)["status"] == "FAILURE"
    relay.set_config(RelayConfig(api_key=KEY, task_seconds=100, limits=LimitRules(requests=1, window=60)))
    imagine(http)
    limited = http.post("/mj/submit/imagine", json={"prompt": "again"})
    assert limited.status_code == 429
    assert relay.stats()["rate_limited"] == 1
