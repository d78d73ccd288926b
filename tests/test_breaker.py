"""The job's circuit breaker against a dead port, a doubled path, a redirect and a gateway's bad-key
answers: the job stops with a message that says what is wrong; its lines stay pending (issue 11, 11 and 13).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.db import Store
from jobs.models import JobStatus
from tests.helpers import RELAY_KEY, all_attempts, batch_line, invoke, write_jsonl
from workers.breaker import TRIP_CALLS, Breaker
from workers.client import RawResponse
from workers.endpoints.chat import CHAT
from workers.outcomes import Call
from workers.retry import Classification, Verdict

pytestmark = pytest.mark.slow


def chat(i: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}


def run_lines(tmp_path: Path, n: int = 60, *args: str) -> Any:
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat(i)) for i in range(n)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    return invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), *args)


def assert_stopped_pending(store: Store, n: int) -> str:
    with store.session() as s:
        job = q.get_job(s, 1)
        counts = q.state_counts(s, 1)
    assert job.status == JobStatus.STOPPED
    assert counts["pending"] == n, counts
    return job.last_error or ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_stops_the_job_after_a_few_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
    monkeypatch.setenv("BATCHER_DATABASE_URL", url)
    result = run_lines(tmp_path, 300, "--concurrency", "32")
    assert result.exit_code == 1
    assert "cannot reach the relay" in result.output
    with Store(url) as store:
        assert "cannot reach the relay" in assert_stopped_pending(store, 300)
        assert len(all_attempts(store)) <= 2 * 32 + TRIP_CALLS  # the lines in hand, not 300 x 5


def test_base_url_ending_in_an_endpoint_shows_the_doubled_path(
    env: str, db: Store, relay: RelayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", relay.url + "/chat/completions")
    result = run_lines(tmp_path)
    assert result.exit_code == 1
    message = assert_stopped_pending(db, 60)
    assert "/v1/chat/completions/chat/completions" in message
    assert f"set it to {relay.url}" in message
    assert relay.stats()["calls"] <= 2 * 32 + TRIP_CALLS


def test_a_redirect_shows_its_location_and_suggests_https(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, fault_rate=1.0, faults=("redirect",)))
    assert run_lines(tmp_path).exit_code == 1
    message = assert_stopped_pending(db, 60)
    https = relay.url.replace("http://", "https://")
    assert f"{https}/chat/completions" in message and f"OPENAI_BASE_URL={https}" in message


@pytest.mark.parametrize("fault", ["nodb400", "plain500"])
def test_a_gateway_refusing_every_first_call_alike_stops_the_job(
    env: str, db: Store, relay: RelayServer, tmp_path: Path, fault: str
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, fault_rate=1.0, faults=(fault,)))
    result = run_lines(tmp_path)
    assert result.exit_code == 1
    message = assert_stopped_pending(db, 60)
    assert "all failed the same way" in message
    assert relay.stats()["calls"] <= 2 * 32 + TRIP_CALLS


def test_no_key_configured_is_said_at_start(
    env: str, relay: RelayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    relay.set_config(RelayConfig())
    result = run_lines(tmp_path, 2)
    assert result.exit_code == 0
    assert "no API key is configured" in result.stderr


def call(status: int | None, verdict: Verdict, error_class: str, code: str | None = None) -> Call:
    response = None if status is None else RawResponse(status, httpx.Headers(), b"")
    c = Classification(verdict, error_class, f"{status} {error_class}", code)
    return Call(c, response, datetime.now(UTC), 1)


BAD = call(400, Verdict.PERMANENT, "bad_request", "no_db_connection")
OK = call(200, Verdict.OK, "ok")
LATER = call(429, Verdict.RETRY, "rate_limited")
DOWN = call(None, Verdict.RETRY, "connection")


def feed(breaker: Breaker, calls: list[Call]) -> str | None:
    tripped = None
    for i, c in enumerate(calls):
        tripped = breaker.observe(c, [i], CHAT) or tripped
    return tripped


@pytest.mark.parametrize(
    ("calls", "trips"),
    [
        ([BAD] * TRIP_CALLS, True),
        ([BAD] * (TRIP_CALLS - 1), False),
        ([OK] + [BAD] * TRIP_CALLS, False),  # after a success, a 400 is about its line
        ([BAD, LATER] * TRIP_CALLS, True),  # 429s neither count nor break the run
        ([BAD, BAD, call(422, Verdict.PERMANENT, "unprocessable")] * 3, False),
        ([OK] + [DOWN] * TRIP_CALLS, True),  # a dead relay trips at any time
        ([DOWN, DOWN, OK] * 4, False),
    ],
)
def test_breaker_table(calls: list[Call], trips: bool) -> None:
    assert (feed(Breaker("http://r/v1"), calls) is not None) == trips


def test_breaker_counts_lines_not_retries_of_one_line() -> None:
    breaker = Breaker("http://r/v1")
    for _ in range(TRIP_CALLS * 2):
        assert breaker.observe(DOWN, [7], CHAT) is None
