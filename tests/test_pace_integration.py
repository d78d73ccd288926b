"""Pacing end to end: `batcher run` over loopback against relays that enforce like real ones.

Behaviour, not speed: every line ends succeeded (a 429 is "later", never a failed line), the
relay's 429s stay a small share of the calls, the pace found is stored and the next job starts
from it, and `status --json` shows the pace. Speed is the benchmark's business.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.enforce import Hints, LimitRules
from batcher.devrelay.windows import LimitMode
from jobs import store as q
from jobs.db import Store
from jobs.options import JobOptions
from tests.helpers import RELAY_KEY, all_lines, batch_line, invoke, write_jsonl
from workers.client import ClientConfig
from workers.learned import job_limits

pytestmark = pytest.mark.slow


def chat_file(tmp_path: Path, n: int, name: str = "in.jsonl") -> Path:
    rows = [
        batch_line(
            f"c{i}",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": f"q {i}"}]},
        )
        for i in range(n)
    ]
    return write_jsonl(tmp_path / name, rows)


def provider_of(relay: RelayServer) -> str:
    return ClientConfig(relay.url, None).provider


def limited(relay: RelayServer, **rules: object) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, latency=0.01, limits=LimitRules(**rules)))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", list(LimitMode))
def test_a_known_limit_is_kept_under_every_enforcement(
    env: str, db: Store, relay: RelayServer, tmp_path: Path, mode: LimitMode
) -> None:
    limited(relay, requests=20, window=1.0, mode=mode)
    result = invoke("run", str(chat_file(tmp_path, 80)), "-o", str(tmp_path / "out.jsonl"), "--rpm", "1200")
    assert result.exit_code == 0, result.stderr
    assert all(line.state == "succeeded" for line in all_lines(db))
    stats = relay.stats()
    assert stats["rate_limited"] <= 0.05 * stats["calls"], stats["rate_limited"]


@pytest.mark.parametrize("hints", [Hints.RETRY_AFTER, Hints.LITELLM, Hints.MESSAGE, Hints.NONE])
def test_an_unknown_limit_is_found_and_no_line_fails(
    env: str, db: Store, relay: RelayServer, tmp_path: Path, hints: Hints
) -> None:
    limited(relay, requests=25, window=1.0, hints=hints)
    source = chat_file(tmp_path, 150)
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--max-attempts", "1")
    assert result.exit_code == 0, result.stderr
    assert all(line.state == "succeeded" for line in all_lines(db))  # 429s used no attempt
    assert relay.stats()["rate_limited"] > 0  # the limit was met, and found
    with db.session() as s:
        learned = q.learned_paces(s, provider_of(relay))
    assert 0 < learned["m"] <= 25 * 1.2


def test_the_next_job_starts_from_the_learned_pace_never_above_its_rpm(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    limited(relay, requests=25, window=1.0)
    assert invoke("run", str(chat_file(tmp_path, 100)), "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    provider = provider_of(relay)
    with db.session() as s:
        found = q.learned_paces(s, provider)["m"]
    limits = job_limits(db, provider, JobOptions())
    assert limits.start_rps(f"{provider}|m") == found
    capped = job_limits(db, provider, JobOptions(rpm=60))
    assert capped.start_rps(f"{provider}|m") == pytest.approx(0.98)
    relay.reset()
    result = invoke("run", str(chat_file(tmp_path, 100, "b.jsonl")), "-o", str(tmp_path / "b.jsonl"), "--new")
    assert result.exit_code == 0, result.stderr
    second = relay.stats()
    assert second["rate_limited"] <= 0.05 * second["calls"]  # started near the limit, not above it


def test_overload_past_max_concurrent_fails_no_line(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(
        RelayConfig(
            api_key=RELAY_KEY, latency=0.05, limits=LimitRules(max_concurrent=8, overload_retry_after=0.2)
        )
    )
    result = invoke(
        "run", str(chat_file(tmp_path, 200)), "-o", str(tmp_path / "out.jsonl"), "--max-attempts", "1"
    )
    assert result.exit_code == 0, result.stderr
    assert all(line.state == "succeeded" for line in all_lines(db))
    assert relay.stats()["peak_in_flight"] <= 8


def test_patience_ends_a_line_the_relay_never_lets_through(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    limited(relay, requests=1, window=3600.0, hints=Hints.NONE)
    result = invoke("run", str(chat_file(tmp_path, 3)), "-o", str(tmp_path / "out.jsonl"), "--max-wait", "2s")
    assert result.exit_code == 3, result.stderr  # completed, some lines failed
    failed = [line for line in all_lines(db) if line.state == "failed"]
    assert len(failed) == 2
    assert all("--max-wait" in (line.last_error or "") for line in failed)


def test_status_json_shows_the_pace(env: str, db: Store, relay: RelayServer, tmp_path: Path) -> None:
    limited(relay, requests=25, window=1.0)
    assert invoke("run", str(chat_file(tmp_path, 60)), "-o", str(tmp_path / "out.jsonl")).exit_code == 0
    result = invoke("status", "1", "--json")
    assert result.exit_code == 0, result.stderr
    pace = json.loads(result.stdout)["pace"]
    assert pace["rate_limited"] == relay.stats()["rate_limited"]
    assert pace["limit_source"] == "learned"
    assert pace["ceiling"] == 256
    text = invoke("status", "1").stdout
    assert "pace: " in text and "limit " in text
