"""The task table's pure parts: stages by elapsed time, the ledger's single refund, result file bytes."""

from __future__ import annotations

import io

import httpx
import mutagen.mp3
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_billing import Ledger, quota_of, usd, video_ratios
from batcher.devrelay.tasks_files import expected_file, file_bytes
from batcher.devrelay.tasks_table import Family, Outcome, Phase, Stage, Task, TaskTable, stage_at


@pytest.mark.parametrize(("elapsed", "outcome", "stage"), [
    (0, Outcome.SUCCESS, Stage(Phase.WAITING, 0)),
    (1.5, Outcome.SUCCESS, Stage(Phase.SUBMITTED, 0)),
    (2.5, Outcome.SUCCESS, Stage(Phase.QUEUED, 0)),
    (6.5, Outcome.SUCCESS, Stage(Phase.RUNNING, 50)),
    (10, Outcome.SUCCESS, Stage(Phase.SUCCEEDED, 100)),
    (10, Outcome.FAILURE, Stage(Phase.FAILED, 100)),
    (1e9, Outcome.STUCK, Stage(Phase.RUNNING, 37)),
])  # fmt: skip
def test_stage_at(elapsed: float, outcome: Outcome, stage: Stage) -> None:
    assert stage_at(elapsed, 10, outcome) == stage


def test_a_task_of_zero_seconds_is_done_at_once() -> None:
    assert stage_at(0, 0, Outcome.SUCCESS).phase is Phase.SUCCEEDED


def test_a_failure_is_refunded_once_and_a_deadline_fails_a_stuck_task() -> None:
    table = TaskTable(seconds=10, timeout=100)
    task = table.add(
        Task("t1", Family.SUNO, "MUSIC", "suno_music", "k", table.clock(), {}, outcome=Outcome.STUCK)
    )
    table.ledger.charge("t1", "suno_music", quota_of("suno_music"))
    table.advance(99)
    assert table.stage(task).phase is Phase.RUNNING
    table.advance(1)
    for _ in range(3):
        assert table.stage(task) == Stage(Phase.FAILED, 100)
    assert task.fail_reason == "任务超时（1.66667分钟）"
    assert table.ledger.snapshot()["refunds"] == 1
    assert table.ledger.net_quota == 0


def test_ledger_money_is_exact() -> None:
    ledger = Ledger()
    ledger.charge("a", "mj_imagine", quota_of("mj_imagine"))
    ledger.charge("b", "mj_upscale", quota_of("mj_upscale"))
    ledger.refund("b", "构图失败")
    ledger.refund("b", "again")
    assert (ledger.snapshot()["net_usd"], ledger.snapshot()["per_task"]["b"]["refund_reason"]) == (
        "0.1",
        "构图失败",
    )
    assert usd(quota_of("kling-v1", video_ratios("10", "1280x720", default_seconds=5))) == "0.5"
    assert video_ratios(None, "1024x1792", default_seconds=4)["seconds"] == 4


def test_result_files_are_deterministic_by_name_and_real_enough() -> None:
    assert file_bytes("suno-abc.mp3") == expected_file("suno-abc.mp3") != file_bytes("suno-abd.mp3")
    assert mutagen.mp3.MP3(io.BytesIO(expected_file("suno-abc.mp3"))).info.length > 0
    assert expected_file("video-x.mp4")[4:8] == b"ftyp"
    assert expected_file("mj-1.png").startswith(b"\x89PNG")
    assert file_bytes("missing-mj-1.png") is None
    assert file_bytes("slow-mj-1.png") == expected_file("mj-1.png")


def test_stats_over_http_carry_the_tasks_and_a_reset_forgets_them() -> None:
    with RelayServer(RelayConfig(task_seconds=0)) as relay:
        root = relay.url.removesuffix("/v1")
        headers = {"Authorization": "Bearer sk-x"}
        first = httpx.post(root + "/mj/submit/imagine", json={"prompt": "x"}, headers=headers).json()[
            "result"
        ]
        stats = httpx.get(root + "/_stats").json()["tasks"]
        assert (stats["submitted"], stats["phases"], stats["billing"]["net_usd"]) == (
            1,
            {"mj": {"succeeded": 1}},
            "0.1",
        )
        usage = httpx.get(root + "/v1/dashboard/billing/usage", headers=headers).json()["total_usage"]
        assert usage == pytest.approx(10.0)  # cents: the task's 0.1 USD
        relay.reset()
        assert relay.stats()["tasks"]["submitted"] == 0
        second = httpx.post(root + "/mj/submit/imagine", json={"prompt": "x"}, headers=headers).json()[
            "result"
        ]
        assert second != first  # ids stay unique across resets
