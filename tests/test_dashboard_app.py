"""batcher.dashboard.app: the pages and the JSON they poll, over a job run against the stand-in relay."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from batcher.dashboard.app import build_app
from batcher.dashboard.guard import Access
from jobs.db import Store
from jobs.settings import load_settings
from tests.helpers import all_attempts, batch_line, invoke, write_jsonl

FAILING = 3  # line 4 carries a marker that makes the relay refuse it


def _lines(n: int) -> list[dict[str, object]]:
    return [
        batch_line(
            f"q{i}",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": f"hi {i}" + (" [[fault:400]]" if i == FAILING else "")}
                ],
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def ran(db: Store, tmp_path: Path) -> int:
    result = invoke(
        "run", str(write_jsonl(tmp_path / "in.jsonl", _lines(30))), "-o", str(tmp_path / "out.jsonl")
    )
    assert result.exit_code == 3, result.output  # one line failed
    return 1


@pytest.fixture
def access() -> Access:
    return Access(None)


@pytest.fixture
def web(db: Store, access: Access) -> TestClient:
    return TestClient(build_app(db, load_settings(), access), base_url="http://127.0.0.1:8770")


def test_jobs_page_lists_the_job_with_its_progress(web: TestClient, ran: int) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert 'data-job="1"' in page.text and "in.jsonl" in page.text
    data = web.get("/api/jobs").json()
    assert data["total"] == 1
    job = data["jobs"][0]
    assert (job["status"], job["total"], job["succeeded"], job["failed"], job["pending"]) == (
        "completed",
        30,
        29,
        1,
        0,
    )
    assert job["tokens"] > 0 and job["cost_usd"] is not None


def test_job_json_counts_what_the_store_holds(web: TestClient, db: Store, ran: int) -> None:
    data = web.get("/api/jobs/1").json()
    attempts = all_attempts(db)
    calls = {a.call_id for a in attempts}
    series = data["series"]
    assert round(sum(series["requests"]) * series["width_s"]) == len(calls)
    assert sum(c["calls"] for c in data["costs"]) == sum(1 for a in attempts if a.total_tokens is not None)
    assert [c["model"] for c in data["costs"]] == ["gpt-4o-mini"]
    assert sum(c["tokens"] for c in data["costs"]) == data["job"]["tokens"]
    failed = data["failures"]
    assert [f["custom_id"] for f in failed] == [f"q{FAILING}"]
    assert failed[0]["status_code"] == 400 and "invalid request" in failed[0]["message"]
    assert data["pace"]["ceiling"] == 256


def test_job_page_and_a_failed_lines_raw_answer(web: TestClient, ran: int) -> None:
    page = web.get("/jobs/1")
    assert page.status_code == 200 and 'id="chart"' in page.text
    line = web.get(f"/jobs/1/lines/{FAILING + 1}")
    assert line.status_code == 200
    assert "invalid_request_error" in line.text and "forced by marker" in line.text
    assert web.get("/jobs/1/lines/999").status_code == 404
    assert web.get("/jobs/77").status_code == 404


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_downloads_parse(web: TestClient, ran: int, fmt: str, tmp_path: Path) -> None:
    answer = web.get(f"/jobs/1/export?format={fmt}")
    assert answer.status_code == 200
    assert f'filename="job-1.{fmt}"' in answer.headers["content-disposition"]
    if fmt == "jsonl":
        ids = [json.loads(line)["custom_id"] for line in answer.text.splitlines()]
    elif fmt == "csv":
        ids = [row["custom_id"] for row in csv.DictReader(io.StringIO(answer.text))]
    else:
        (tmp_path / "x.parquet").write_bytes(answer.content)
        ids = pq.read_table(tmp_path / "x.parquet").column("custom_id").to_pylist()
    assert ids == [f"q{i}" for i in range(30)]
    assert web.get("/jobs/1/export?format=xml").status_code == 400


def test_actions_do_what_the_commands_do(web: TestClient, access: Access, ran: int) -> None:
    csrf = {"X-CSRF-Token": access.csrf}
    refused = web.post("/api/jobs/1/pause", headers=csrf)
    assert refused.status_code == 409 and "completed" in refused.json()["error"]
    retried = web.post("/api/jobs/1/retry", headers=csrf)
    assert retried.status_code == 200 and "1 failed lines are pending again" in retried.json()["message"]
    assert web.get("/api/jobs/1").json()["job"]["status"] == "queued"
    assert web.post("/api/jobs/1/pause", headers=csrf).status_code == 200
    assert web.get("/api/jobs/1").json()["job"]["status"] == "paused"
    resumed = web.post("/api/jobs/1/resume", headers=csrf)  # no broker in the tests
    assert resumed.status_code == 409 and "broker" in resumed.json()["error"].lower()
    assert web.post("/api/jobs/1/cancel", headers=csrf).status_code == 200
    job = web.get("/api/jobs/1").json()["job"]
    assert (job["status"], job["cancelled"]) == ("cancelled", 1)
    assert web.post("/api/jobs/1/explode", headers=csrf).status_code == 404


def test_usage_page_shows_the_report(web: TestClient, ran: int) -> None:
    page = web.get("/usage")
    assert page.status_code == 200
    assert 'id="usage-day"' in page.text and 'id="usage-model"' in page.text and "gpt-4o-mini" in page.text
    assert 'id="usage-provider"' in page.text and "<td>default</td>" in page.text  # the one unrouted relay


def test_estimate_of_an_uploaded_file(web: TestClient, access: Access, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", _lines(5))
    with path.open("rb") as f:
        answer = web.post(
            "/api/estimate", headers={"X-CSRF-Token": access.csrf}, files={"file": ("e.jsonl", f)}
        )
    assert answer.status_code == 200
    data = answer.json()
    assert data["models"][0]["model"] == "gpt-4o-mini" and data["models"][0]["lines"] == 5
    assert data["assumptions"]
    bad = web.post(
        "/api/estimate", headers={"X-CSRF-Token": access.csrf}, files={"file": ("b.jsonl", b"{nope\n")}
    )
    assert bad.status_code == 200 and bad.json()["invalid_lines"] == 1
    assert web.post("/api/estimate", headers={"X-CSRF-Token": access.csrf}).status_code == 400


def test_dashboard_command_has_help() -> None:
    result = invoke("dashboard", "--help")
    assert result.exit_code == 0 and "--token" in result.output
