"""The Runway families: both shapes, CometAPI's envelope, the price names, images as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.inputfiles import FileResolver
from jobs.blobs import StoredFile
from jobs.endpoints import Endpoint
from workers.endpoints import BodyError, family_of
from workers.endpoints.taskfamily import Phase, TaskFamily
from workers.taskfollow import stored_to_data_urls

OFFICIAL, REVERSE = "/runwayml/v1/image_to_video", "/runway/tasks"


def fam(path: str) -> TaskFamily:
    family = family_of(Endpoint(path))
    assert isinstance(family, TaskFamily)
    return family


@pytest.mark.parametrize(
    ("path", "body", "model"),
    [
        (OFFICIAL, {"promptImage": "x"}, "runwayml_gen3a_turbo_5"),
        (OFFICIAL, {"promptImage": "x", "model": "gen4_turbo", "duration": 10}, "runwayml_gen4_turbo_10"),
        (REVERSE, {"taskType": "gen2", "options": {"seconds": 10}}, "runway_gen2"),
        (REVERSE, {"taskType": "gen3a", "options": {}}, "runway_gen3_5"),
        (REVERSE, {"taskType": "europa", "options": {"seconds": "10"}}, "runway_gen3_10"),
        (REVERSE, {"taskType": "gen3a_turbo", "options": {"seconds": 5}}, "runway_gen3_turbo_5"),
    ],
)
def test_price_names(path: str, body: dict[str, Any], model: str) -> None:
    assert fam(path).line_model(path, body) == model


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (OFFICIAL, {"promptText": "x"}, "promptImage"),
        (OFFICIAL, {"promptImage": "x", "duration": 7}, "5 or 10"),
        (REVERSE, {"options": {"text_prompt": "x"}}, "taskType"),
        (REVERSE, {"taskType": "gen2", "options": {"seed": 1}}, "text_prompt"),
        (REVERSE, {"taskType": "gen2", "options": {"text_prompt": "x", "seconds": 3}}, "options.seconds"),
    ],
)
def test_bad_bodies_say_what_to_fix(path: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        fam(path).check(body)


@pytest.mark.parametrize(
    ("path", "answer", "task_id", "refusal"),
    [
        (OFFICIAL, {"id": "r-1"}, "r-1", None),
        (OFFICIAL, {"id": "r-1", "status": "PENDING"}, "r-1", None),
        (OFFICIAL, {"code": "success", "data": {"task_id": "r-2"}}, "r-2", None),
        (OFFICIAL, {"error": "promptImage is not a valid image"}, None, "not a valid image"),
        (OFFICIAL, {"code": "model_price_error", "message": "no price", "data": None}, None, "no price"),
        (REVERSE, {"task": {"id": "w-1", "status": "PENDING"}}, "w-1", None),
        (REVERSE, {"code": "invalid_request", "message": "taskType", "data": None}, None, "taskType"),
    ],
)
def test_submit_answers(path: str, answer: dict[str, Any], task_id: str | None, refusal: str | None) -> None:
    got = fam(path).read_submit(200, orjson.dumps(answer))
    assert got.task_id == task_id and (refusal or "") in (got.refusal or "")
    assert (refusal is None) == (got.refusal is None)


@pytest.mark.parametrize(
    ("task", "phase", "progress", "urls", "reason"),
    [
        ({"id": "r", "status": "PENDING"}, Phase.WAITING, None, (), None),
        ({"id": "r", "status": "THROTTLED"}, Phase.WAITING, None, (), None),
        ({"id": "r", "status": "RUNNING", "progress": 0.275}, Phase.RUNNING, "27%", (), None),
        ({"id": "r", "status": "SUCCEEDED", "output": ["http://cdn/a.mp4"]}, Phase.SUCCEEDED, None,
         ("http://cdn/a.mp4",), None),
        ({"id": "r", "status": "FAILED", "failure": "bad output", "failureCode": "INTERNAL"}, Phase.FAILED, None,
         (), "bad output (INTERNAL)"),
        ({"id": "r", "status": "CANCELLED"}, Phase.FAILED, None, (), None),
    ],
)  # fmt: skip
def test_official_task_objects(
    task: dict[str, Any], phase: Phase, progress: str | None, urls: tuple[str, ...], reason: str | None
) -> None:
    [view] = fam(OFFICIAL).read_poll(orjson.dumps(task))
    assert (view.phase, view.progress, view.urls, view.fail_reason) == (phase, progress, urls, reason)


def test_cometapis_taskdto_around_the_task() -> None:
    inner = {"id": "r", "status": "SUCCEEDED", "output": ["http://cdn/a.mp4"]}
    dto = {"task_id": "r", "action": "IMAGE_TO_VIDEO", "status": "SUCCESS", "progress": "100%", "data": inner}
    [view] = fam(OFFICIAL).read_poll(orjson.dumps({"code": "success", "data": dto}))
    assert (view.task_id, view.phase, view.urls) == ("r", Phase.SUCCEEDED, ("http://cdn/a.mp4",))
    queued = {"task_id": "r", "status": "QUEUED", "progress": "0%", "data": {"id": "r", "status": "PENDING"}}
    [waiting] = fam(OFFICIAL).read_poll(orjson.dumps({"code": "success", "data": queued}))
    assert waiting.phase is Phase.WAITING
    failed = {
        "task_id": "r",
        "status": "FAILURE",
        "data": {"id": "r", "failure": "moderation", "failureCode": "SAFETY"},
    }
    [lost] = fam(OFFICIAL).read_poll(orjson.dumps({"code": "success", "data": failed}))
    assert (lost.phase, lost.fail_reason) == (Phase.FAILED, "moderation (SAFETY)")


def test_a_just_created_task_the_relay_does_not_know_yet_is_not_gone_for_good() -> None:
    """CometAPI answers ``task_not_exist`` for a while: the poll names no task, so the line waits."""
    assert fam(OFFICIAL).read_poll(b'{"code":"task_not_exist","message":"task_not_exist","data":null}') == []


def test_reverse_task_objects() -> None:
    task = {"id": "w", "status": "RUNNING", "progressRatio": "0.4", "artifacts": []}
    [view] = fam(REVERSE).read_poll(orjson.dumps({"task": task}))
    assert (view.phase, view.progress) == (Phase.RUNNING, "40%")
    done = {"id": "w", "status": "SUCCEEDED", "artifacts": [{"url": "http://cdn/w.mp4"}]}
    [finished] = fam(REVERSE).read_poll(orjson.dumps({"task": done}))
    assert finished.urls == ("http://cdn/w.mp4",)
    failed = {"id": "w", "status": "FAILED", "error": {"message": "flagged"}}
    [lost] = fam(REVERSE).read_poll(orjson.dumps({"task": failed}))
    assert lost.fail_reason == "flagged"


def test_images_as_files_urls_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG-cat")
    resolver = FileResolver(tmp_path)
    official = {"promptImage": "cat.png"}
    assert len(resolver.resolve(fam(OFFICIAL), official)) == 1 and StoredFile.from_json(
        official["promptImage"]
    )
    url = {"promptImage": "https://example.com/cat.png"}
    assert resolver.resolve(fam(OFFICIAL), url) == [] and url["promptImage"] == "https://example.com/cat.png"
    reverse: dict[str, Any] = {"taskType": "gen2", "options": {"init_image": "cat.png", "text_prompt": "x"}}
    [local] = resolver.resolve(fam(REVERSE), reverse)
    sent = stored_to_data_urls(reverse, lambda sha: b"\x89PNG-cat" if sha == local.stored.sha256 else b"")
    assert sent["options"]["init_image"].startswith("data:image/png;base64,")
    assert sent["options"]["text_prompt"] == "x"


def test_the_official_shape_sends_runways_version_header() -> None:
    assert ("X-Runway-Version", "2024-11-06") in fam(OFFICIAL).request(b"{}").headers
