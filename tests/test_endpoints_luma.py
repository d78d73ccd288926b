"""The Luma family reads every generation shape the vendor docs give, and takes extends two ways."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobs.endpoints import Endpoint
from workers.endpoints import BodyError, by_path
from workers.endpoints.taskfamily import FollowUp, Phase, SubmitCall, TaskFamily

CREATE = "/luma/generations"
EXTEND = "/luma/generations/{task_id}/extend"


def fam(path: str) -> TaskFamily:
    family = by_path(path)
    assert isinstance(family, TaskFamily), path
    return family


@pytest.mark.parametrize(
    ("path", "model", "family"),
    [
        (CREATE, "luma_video_api", "luma"),
        ("/luma/v1/generations", "luma_video_api", "luma"),
        ("/dream-machine/v1/generations", "luma_video_api", "luma"),
        ("/luma/generations/9d4b7516-aa/extend", "luma_video_extend_api", "luma"),
        (EXTEND, "luma_video_extend_api", "luma_extend"),
        ("/dream-machine/v1/generations/{task_id}/extend", "luma_video_extend_api", "luma_extend"),
    ],
)
def test_routes_and_their_prices(path: str, model: str, family: str) -> None:
    assert (fam(path).name, fam(path).line_model(path, {})) == (family, model)


def test_no_other_luma_route_is_taken() -> None:
    assert by_path("/luma/generations/x") is None and by_path("/luma/generations/a/b/extend") is None


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (CREATE, {"aspect_ratio": "16:9"}, "user_prompt"),
        (CREATE, {"user_prompt": "x", "after": "clip"}, "placeholder"),
        (EXTEND, {"user_prompt": "x"}, '"after"'),
        (EXTEND, {"user_prompt": "x", "after": "clip", "button": "U1"}, "Midjourney"),
    ],
)
def test_bad_bodies_say_what_to_fix(path: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        fam(path).check(body)


def test_an_extend_of_another_line_goes_to_its_task() -> None:
    call = fam(EXTEND).follow_up(SubmitCall(Endpoint(EXTEND), {"user_prompt": "more"}), FollowUp("gen-1"))
    assert call == SubmitCall(Endpoint("/luma/generations/gen-1/extend"), {"user_prompt": "more"})
    assert fam(EXTEND).poll_call(EXTEND, ["gen-2"]).endpoint == Endpoint("/luma/generations/gen-2")
    dream = "/dream-machine/v1/generations"
    assert fam(dream).poll_call(dream, ["g"]).endpoint == Endpoint(f"{dream}/g")


@pytest.mark.parametrize(
    ("answer", "task_id", "refusal"),
    [
        ({"id": "9d4b", "state": "pending", "video": None}, "9d4b", None),
        ({"code": "success", "data": {"id": "9d4b", "state": "pending"}}, "9d4b", None),
        ({"detail": "Insufficient credits"}, None, "Insufficient credits"),
        (
            {"code": "invalid_request", "message": "user_prompt is required", "data": None},
            None,
            "user_prompt",
        ),
        ({"error": {"message": "no channel", "type": "new_api_error"}}, None, "no channel"),
    ],
)
def test_submit_answers(answer: dict[str, Any], task_id: str | None, refusal: str | None) -> None:
    got = fam(CREATE).read_submit(200, orjson.dumps(answer))
    assert got.task_id == task_id and (refusal or "") in (got.refusal or "")
    assert (refusal is None) == (got.refusal is None)


VIDEO = {"url": "http://cdn/wm.mp4", "download_url": "http://cdn/clean.mp4", "width": 1360}


@pytest.mark.parametrize(
    ("generation", "phase", "urls"),
    [
        ({"id": "g", "state": "pending", "video": None}, Phase.WAITING, ()),
        ({"id": "g", "state": "dreaming"}, Phase.RUNNING, ()),
        ({"id": "g", "state": "completed", "video": VIDEO}, Phase.SUCCEEDED, ("http://cdn/clean.mp4",)),
        ({"id": "g", "state": "completed", "video": {"url": "http://cdn/v.mp4"}}, Phase.SUCCEEDED,
         ("http://cdn/v.mp4",)),
        ({"id": "g", "state": "completed", "artifact": {"video": VIDEO}}, Phase.SUCCEEDED, ("http://cdn/clean.mp4",)),
        ({"id": "g", "state": "completed", "assets": {"video": "http://cdn/a.mp4"}}, Phase.SUCCEEDED,
         ("http://cdn/a.mp4",)),
        ({"id": "g", "state": "failed", "failure_reason": "moderation"}, Phase.FAILED, ()),
    ],
)  # fmt: skip
def test_generation_objects(generation: dict[str, Any], phase: Phase, urls: tuple[str, ...]) -> None:
    [view] = fam(CREATE).read_poll(orjson.dumps(generation))
    assert (view.task_id, view.phase, view.urls) == ("g", phase, urls)


def test_a_generation_in_new_apis_task_envelope_is_read_too() -> None:
    wrapped = {"code": "success", "data": {"id": "g", "state": "completed", "video": VIDEO}}
    [view] = fam(CREATE).read_poll(orjson.dumps(wrapped))
    assert view.phase is Phase.SUCCEEDED and view.urls == ("http://cdn/clean.mp4",)
    dto = {"code": "success", "data": {"task_id": "g", "status": "FAILURE", "fail_reason": "nsfw"}}
    [failed] = fam(CREATE).read_poll(orjson.dumps(dto))
    assert (failed.phase, failed.fail_reason) == (Phase.FAILED, "nsfw")
