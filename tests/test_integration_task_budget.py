"""A budget reached by task lines against the stand-in relay, on `batcher run` and on a Celery worker:
the tasks already submitted (already charged) are polled to their end and their files fetched,
only new submits wait, and the job pauses once none is left going."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.tasks_files import expected_file
from jobs import store as q
from jobs.db import Store
from tests.cluster import Cluster, relay_cluster
from tests.helpers import RELAY_KEY, all_lines, batch_line, invoke, write_jsonl

BUDGET = "0.35"  # three imagines at 0.1 fit, a fourth does not


def imagine_rows() -> list[dict[str, Any]]:
    return [batch_line(f"c{n}", "/mj/submit/imagine", {"prompt": f"cat number {n}"}) for n in range(6)]


def price_file(folder: Path) -> Path:
    path = folder / "prices.toml"
    path.write_text('[models."mj_imagine"]\nper_call = 0.1\n')
    return path


def check_paused_after_polling(store: Store, relay: RelayServer, job_id: int) -> None:
    with store.session() as session:
        job = q.get_job(session, job_id)
    assert job.status == "paused" and "budget reached" in (job.last_error or ""), job.last_error
    charges = relay.stats()["tasks"]["billing"]["per_model"]["mj_imagine"]["charges"]
    lines = all_lines(store)
    done = [line for line in lines if line.state == "succeeded"]
    assert charges == len(done) == 3, {line.custom_id: line.state for line in lines}
    assert {line.state for line in lines if line not in done} == {"pending"}
    for line in done:  # polled to the end: the files are here
        answer = orjson.loads(line.response_body or "{}")
        [url], [path] = answer["urls"], answer["files"]
        assert Path(path).read_bytes() == expected_file(url.rsplit("/", 1)[1].split("?")[0])


def test_run_polls_the_submitted_tasks_to_their_end_then_pauses(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, task_seconds=0.5))
    source = write_jsonl(tmp_path / "in.jsonl", imagine_rows())
    flags = ("--poll-interval", "0.2", "--timeout", "10", "--prices", str(price_file(tmp_path)))
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--budget", BUDGET, *flags)
    assert result.exit_code != 0, result.stderr  # paused, not done
    check_paused_after_polling(db, relay, 1)
    assert invoke("run-job", "1", "--budget", "1").exit_code == 0
    assert all(line.state == "succeeded" for line in all_lines(db))
    assert relay.stats()["tasks"]["billing"]["per_model"]["mj_imagine"]["charges"] == 6  # none sent twice


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[Cluster, RelayServer]]:
    with relay_cluster(
        tmp_path, RelayConfig(api_key=RELAY_KEY, task_seconds=2), broker_url=redis_url, db_url=pg_url
    ) as both:
        yield both


@pytest.mark.redis
@pytest.mark.postgres
def test_a_celery_worker_polls_the_submitted_tasks_to_their_end_then_pauses(
    cluster: tuple[Cluster, RelayServer], tmp_path: Path
) -> None:
    workers, relay = cluster
    options = {"budget": BUDGET, "prices": [str(price_file(tmp_path))], "poll_interval": 0.5, "timeout": 10}
    job_id = workers.submit(write_jsonl(tmp_path / "in.jsonl", imagine_rows()), options=options)
    workers.start_worker("a", concurrency=2)
    deadline = time.monotonic() + 180
    while True:
        with workers.store.session() as session:
            if q.get_job(session, job_id).status == "paused":
                break
        assert time.monotonic() < deadline, workers.tail_logs()
        time.sleep(0.2)
    check_paused_after_polling(workers.store, relay, job_id)
