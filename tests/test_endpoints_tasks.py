"""Task families read every submit and poll form the relay docs give (``relay-task-apis.md``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobs.endpoints import Endpoint
from workers.endpoints import BodyError, by_path, family_of
from workers.endpoints.taskfamily import Phase, TaskFamily

MJ = family_of(Endpoint("/mj/submit/imagine"))
SUNO = family_of(Endpoint("/suno/submit/music"))
VIDEO = family_of(Endpoint("/v1/video/generations"))
RUNWAY = family_of(Endpoint("/runwayml/v1/image_to_video"))


def fam(x: Any) -> TaskFamily:
    assert isinstance(x, TaskFamily)
    return x


@pytest.mark.parametrize(
    ("family", "answer", "task_id", "later", "refusal"),
    [
        (MJ, {"code": 1, "description": "提交成功", "result": "1689"}, "1689", False, None),
        (MJ, {"code": 22, "description": "排队中", "result": "1690"}, "1690", False, None),
        (MJ, {"code": 21, "result": "0741", "properties": {"status": "SUCCESS"}}, "0741", False, None),
        (MJ, {"code": 23, "description": "队列已满，请稍后尝试", "result": ""}, None, True, "queue full"),
        (
            MJ,
            {"code": 24, "description": "可能包含敏感词", "properties": {"bannedWord": "nude"}},
            None,
            False,
            "nude",
        ),
        (MJ, {"code": 4, "description": "prompt不能为空"}, None, False, "code 4"),
        (SUNO, {"code": "success", "message": "", "data": "task_abc"}, "task_abc", False, None),
        (
            SUNO,
            {"code": "invalid_request", "message": "prompt_empty", "data": None},
            None,
            False,
            "prompt_empty",
        ),
        (
            VIDEO,
            {"id": "task_v", "task_id": "task_v", "object": "video", "status": "queued"},
            "task_v",
            False,
            None,
        ),
        (VIDEO, {"code": 0, "message": "", "task_id": "k1", "data": {"task_id": "k1"}}, "k1", False, None),
        (VIDEO, {"code": 1201, "message": "bad prompt"}, None, False, "bad prompt"),
    ],
)
def test_submit_answers(
    family: Any, answer: dict[str, Any], task_id: str | None, later: bool, refusal: str | None
) -> None:
    got = fam(family).read_submit(200, orjson.dumps(answer))
    assert (got.task_id, got.later) == (task_id, later)
    assert (refusal is None) == (got.refusal is None) and (refusal or "") in (got.refusal or "")


def test_mj_code_21_kept_means_the_modal_is_next() -> None:
    got = fam(MJ).read_submit(200, b'{"code":21,"description":"Waiting for window confirm","result":"9"}')
    assert got.task_id == "9" and got.modal


@pytest.mark.parametrize(
    ("task", "phase", "urls"),
    [
        ({"id": "1", "status": "", "progress": "0%"}, Phase.WAITING, ()),
        (
            {"id": "1", "status": "IN_PROGRESS", "progress": "37%", "imageUrl": "http://x/1.png"},
            Phase.RUNNING,
            ("http://x/1.png",),
        ),
        (
            {"id": "1", "status": "SUCCESS", "imageUrl": "http://x/1.png"},
            Phase.SUCCEEDED,
            ("http://x/1.png",),
        ),
        ({"id": "1", "status": "FAILURE", "failReason": "no"}, Phase.FAILED, ()),
        (
            {
                "id": "1",
                "status": "IN_PROGRESS",
                "progress": "50%",
                "failReason": "上游任务超时（超过1小时）",
            },
            Phase.FAILED,
            (),
        ),
        ({"id": "1", "status": "MODAL"}, Phase.MODAL, ()),
    ],
)
def test_mj_task_objects(task: dict[str, Any], phase: Phase, urls: tuple[str, ...]) -> None:
    [view] = fam(MJ).read_poll(orjson.dumps([task]))
    assert (view.phase, view.urls) == (phase, urls)


def test_old_video_relays_keep_the_url_in_fail_reason() -> None:
    dto = {"task_id": "t", "status": "SUCCESS", "fail_reason": "http://cdn/v.mp4", "progress": "100%"}
    [view] = fam(VIDEO).read_poll(orjson.dumps({"code": "success", "data": dto}))
    assert view.phase is Phase.SUCCEEDED and view.urls == ("http://cdn/v.mp4",) and view.fail_reason is None


def test_suno_clips_give_their_urls() -> None:
    clips = [{"id": "c1", "audio_url": "http://a/1.mp3", "image_url": "http://a/1.png"}]
    dto = {"task_id": "t", "status": "SUCCESS", "data": clips}
    [view] = fam(SUNO).read_poll(orjson.dumps({"code": "success", "data": [dto]}))
    assert view.urls == ("http://a/1.mp3", "http://a/1.png")


def test_routes_with_a_mode_prefix_poll_under_it() -> None:
    family = by_path("/mj-relax/mj/submit/imagine")
    assert family is MJ
    assert (
        fam(MJ).poll_call("/mj-relax/mj/submit/imagine", ["1"]).endpoint.path
        == "/mj-relax/mj/task/list-by-condition"
    )
    assert (
        Endpoint("/mj/submit/imagine").url_under("https://relay.example/v1")
        == "https://relay.example/mj/submit/imagine"
    )


@pytest.mark.parametrize(
    ("family", "body", "message"),
    [
        (MJ, {"button": "U1"}, '"button" needs "after"'),
        (MJ, {"after": 3, "button": "U1"}, '"after" must name'),
        (SUNO, {"tags": "pop"}, "needs"),
        (VIDEO, {"model": "kling-v1", "prompt": " "}, "non-blank"),
    ],
)
def test_bad_bodies_say_what_to_fix(family: Any, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        family.check(body)


@pytest.mark.parametrize(
    ("header", "calls"),
    [('{"seconds": 8, "size": 1.666667}', 8 * 1.666667), ('{"seconds": 5}', 5.0), ("", None), ("nope", None)],
)
def test_a_video_submit_says_what_it_billed(header: str, calls: float | None) -> None:
    from workers.taskcalls import other_ratios

    assert other_ratios({"X-New-Api-Other-Ratios": header} if header else {}) == calls


def test_no_quota_left_stops_the_job_instead_of_failing_lines() -> None:
    import httpx

    from workers.client import RawResponse
    from workers.taskcalls import SubmitKind, submit_outcome

    body = b'{"description":"quota_not_enough ","type":"upstream_error","code":4}'
    assert submit_outcome(fam(MJ), RawResponse(400, httpx.Headers(), body)).kind is SubmitKind.FATAL
    banned = b'{"description":"prompt_is_required ","type":"upstream_error","code":4}'
    assert submit_outcome(fam(MJ), RawResponse(400, httpx.Headers(), banned)).kind is SubmitKind.REFUSED


NGINX_504 = b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"
TASK_ERROR_502 = b'{"code":"fail_to_fetch_task","message":"bad gateway","data":null}'


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (504, NGINX_504, "unknown"),  # a proxy gave up waiting: the relay behind may have the task
        (502, b"<html>502 Bad Gateway</html>", "unknown"),
        (524, b"", "unknown"),  # Cloudflare: the origin did not answer in time
        (502, TASK_ERROR_502, "later"),  # the relay's own envelope: it refunded the submit
        (503, b"<html>503 Service Unavailable</html>", "later"),  # nothing behind took it
        (500, b'{"code":"internal_error","message":"x","data":null}', "later"),
    ],
)
def test_a_proxys_gateway_page_is_an_unknown_submit_not_a_later_one(
    status: int, body: bytes, kind: str
) -> None:
    import httpx

    from workers.client import RawResponse
    from workers.taskcalls import submit_outcome

    assert submit_outcome(fam(SUNO), RawResponse(status, httpx.Headers(), body)).kind == kind


SHORT_KLING = {"task_id": "t", "status": "SUCCESS", "progress": "100%", "result_url": "http://cdn/v.mp4"}


@pytest.mark.parametrize(
    ("family", "answer", "quota"),
    [
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"quota": 175000}}, 175000),  # new-api's TaskDto
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"quota": "175000"}}, 175000),  # a numeric string
        (SUNO, {"code": "success", "data": [SHORT_KLING | {"quota": 50000}]}, 50000),  # the batch fetch
        (RUNWAY, {"code": "success", "data": SHORT_KLING | {"quota": 125000}}, 125000),  # CometAPI's wrap
        (VIDEO, {"code": "success", "data": SHORT_KLING}, None),  # an older TaskDto: no quota
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"quota": 0}}, None),  # not billed on the row
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"quota": 1.5}}, None),  # no quota is a fraction
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"quota": True}}, None),
        (VIDEO, {"code": "success", "data": SHORT_KLING | {"status": "IN_PROGRESS", "quota": 9}}, None),
        (VIDEO, {"object": "video", "id": "t", "status": "completed", "metadata": {"url": "u"}}, None),
        (MJ, [{"id": "1", "status": "SUCCESS", "imageUrl": "http://cdn/1.png", "quota": 9}], None),
    ],
)
def test_the_relays_final_charge_is_read_from_a_succeeded_taskdto(
    family: Any, answer: Any, quota: int | None
) -> None:
    [view] = fam(family).read_poll(orjson.dumps(answer))
    assert view.quota == quota
