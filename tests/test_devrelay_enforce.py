"""The relay's enforcement over real loopback HTTP: limits per key, hints, headers, the in-flight cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.enforce import OVERLOAD_MESSAGE, Hints, LimitRules, format_reset
from batcher.devrelay.windows import LimitMode


def chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def relay() -> Iterator[RelayServer]:
    with RelayServer() as server:
        yield server


def burst(relay: RelayServer, n: int, key: str = "sk-a") -> list[httpx.Response]:
    with httpx.Client(base_url=relay.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        return [c.post("/chat/completions", json=chat(f"q{i}")) for i in range(n)]


def clear_of_a_window_edge(window: float, margin: float = 5.0) -> None:
    """Start a burst well inside one fixed window (they begin at multiples of ``window`` on the
    wall clock): a burst that straddles an edge is counted in two windows."""
    into = time.time() % window
    if into > window - margin:
        time.sleep(window - into + 0.05)


@pytest.mark.parametrize("mode", list(LimitMode))
def test_each_mode_refuses_past_the_limit_with_the_wait(relay: RelayServer, mode: LimitMode) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=5, window=60.0, mode=mode)))
    clear_of_a_window_edge(60.0)
    answers = burst(relay, 8)
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < float(refused.headers["retry-after"]) <= 60
    assert int(refused.headers["retry-after-ms"]) > 0
    assert relay.stats()["rate_limited"] == 3


def test_limits_are_per_api_key(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=2, window=60.0)))
    assert [r.status_code for r in burst(relay, 3, "sk-a")] == [200, 200, 429]
    assert [r.status_code for r in burst(relay, 2, "sk-b")] == [200, 200]


def test_token_limit_counts_the_answers_tokens(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(tokens=40, window=60.0)))
    answers = burst(relay, 6)
    used = [r.json()["usage"]["total_tokens"] for r in answers if r.status_code == 200]
    assert sum(used) <= 40
    assert answers[-1].status_code == 429
    assert answers[-1].json()["error"]["type"] == "tokens"


def test_a_call_refused_for_tokens_uses_no_request(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=3, tokens=1, window=60.0)))
    assert [r.status_code for r in burst(relay, 3)] == [200, 429, 429]
    relay.set_config(RelayConfig(limits=LimitRules(requests=3, tokens=1000, window=60.0)))
    assert [r.status_code for r in burst(relay, 4)] == [200, 200, 200, 429]


@pytest.mark.parametrize(
    ("hints", "headers", "in_message"),
    [
        (Hints.RETRY_AFTER, {"retry-after", "retry-after-ms"}, False),
        (Hints.LITELLM, {"llm_provider-retry-after", "llm_provider-retry-after-ms"}, True),
        (Hints.MESSAGE, set(), True),
        (Hints.NONE, set(), False),
    ],
)
def test_hints_say_when_to_come_back_the_way_asked(
    relay: RelayServer, hints: Hints, headers: set[str], in_message: bool
) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=1, window=60.0, hints=hints)))
    refused = burst(relay, 2)[1]
    names = {"retry-after", "retry-after-ms", "llm_provider-retry-after", "llm_provider-retry-after-ms"}
    assert {h for h in names if h in refused.headers} == headers
    assert ("Please try again in" in refused.json()["error"]["message"]) is in_message


def test_ratelimit_headers_on_every_answer(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=2, window=60.0, ratelimit_headers=True)))
    first, second, third = burst(relay, 3)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")


def test_no_ratelimit_headers_unless_asked(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=2, window=60.0)))
    assert "x-ratelimit-remaining-requests" not in burst(relay, 1)[0].headers


def test_rps_limit_is_a_fixed_one_second_window() -> None:
    rules = RelayConfig(rps_limit=10).rules
    assert (rules.requests, rules.window, rules.mode) == (10, 1.0, LimitMode.FIXED)


@pytest.mark.parametrize("retry_after", [1.0, None])
def test_past_max_concurrent_answers_new_api_overload(relay: RelayServer, retry_after: float | None) -> None:
    limits = LimitRules(max_concurrent=2, overload_retry_after=retry_after)
    relay.set_config(RelayConfig(latency=1.0, limits=limits))
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: burst(relay, 1, f"sk-{i}")[0], range(6)))
    refused = [r for r in answers if r.status_code == 503]
    assert len(refused) == 4
    error = refused[0].json()["error"]
    assert (error["message"], error["type"], error["code"]) == (
        OVERLOAD_MESSAGE,
        "new_api_error",
        "upstream_overloaded",
    )
    assert ("retry-after" in refused[0].headers) is (retry_after is not None)
    stats = relay.stats()
    assert (stats["overloaded"], stats["peak_in_flight"]) == (4, 2)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.558, "558ms"), (0.0001, "1ms"), (1.5, "1.5s"), (60.0, "60s")]
)
def test_format_reset(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_fault_429_window_is_llmocks_short_wait_beside_a_long_reset(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(fault_rate=1.0, faults=("429_window",), retry_after=0.012))
    refused = burst(relay, 1)[0]
    assert refused.status_code == 429
    assert refused.headers["retry-after-ms"] == "12"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "59.5s"


@pytest.mark.parametrize("mode", list(LimitMode))
def test_the_relay_reports_what_its_limits_admitted_by_their_own_clock(
    relay: RelayServer, mode: LimitMode
) -> None:
    relay.set_config(RelayConfig(limits=LimitRules(requests=5, window=60.0, mode=mode)))
    clear_of_a_window_edge(60.0)
    burst(relay, 8)
    counts = relay.stats()["limits"]
    assert sum(counts["admitted_per_second"].values()) == 5  # the 429s are not admitted
    # never more than the limit in one window (a bucket refills a little during the burst)
    assert counts["busiest_window"] == pytest.approx(5, abs=0.1)
    assert counts["limit"] == {"requests": 5, "window": 60.0, "mode": str(mode)}


def test_the_relay_reports_the_calls_it_had_in_flight_on_average(relay: RelayServer) -> None:
    """Calls held 0.3 s each: the mean concurrency over the busy time, never above the cap."""
    relay.set_config(RelayConfig(latency=0.3, limits=LimitRules(max_concurrent=5)))
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda i: burst(relay, 1, key=f"sk-{i}"), range(5)))
    mean = relay.stats()["limits"]["mean_in_flight"]
    assert 0 < mean <= 5.0  # never above what it let in at once
