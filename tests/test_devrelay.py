"""The dev relay over real loopback HTTP: answer shapes, determinism, faults, limits and counters."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.answers import (
    body_key,
    count_tokens,
    expected_audio,
    expected_chat_content,
    expected_completion_text,
    expected_embedding,
)
from batcher.devrelay.faults import ALL_FAULTS, PERMANENT_FAULTS, find_marker
from tests.helpers import RELAY_KEY, invoke

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there world"}]}


@pytest.fixture
def relay() -> Iterator[RelayServer]:
    with RelayServer() as server:
        yield server


@pytest.fixture
def client(relay: RelayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.url, timeout=5.0) as c:
        yield c


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll the relay's counters: a cancelled handler is counted a moment after the client gives up."""
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- Pure answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 1), ("one", 1), ("one two  three", 3), ("你好世界", 5), ("hi 你好", 4), ("こんにちは", 6)],
)
def test_count_tokens_words_plus_cjk(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_expected_chat_content_digest_and_last_text() -> None:
    body = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x" * 300}]}
    content = expected_chat_content(body)
    assert content.startswith("echo ")
    assert content.endswith(": " + "x" * 200)
    other = {"messages": [{"role": "system", "content": "t"}, {"role": "user", "content": "x" * 300}]}
    assert expected_chat_content(other) != content


def test_expected_chat_content_takes_text_parts() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert expected_chat_content({"messages": [{"role": "user", "content": parts}]}).endswith(": look")


def test_expected_embedding_is_float32_exact_and_bounded() -> None:
    vector = expected_embedding("abc", 20)
    assert len(vector) == 20
    assert all(-1.0 <= x <= 1.0 for x in vector)
    assert list(struct.unpack("<20f", struct.pack("<20f", *vector))) == vector
    assert expected_embedding([1, 2, 3], 8) != expected_embedding("abc", 8)


def test_body_key_ignores_key_order() -> None:
    assert body_key({"a": 1, "b": 2}) == body_key({"b": 2, "a": 1})
    assert len(body_key({"a": 1})) == 16


@pytest.mark.parametrize(
    ("raw", "marker"),
    [
        (b"x [[fault:500]] y", ("500", None)),
        (b"[[fault:500x2]]", ("500", 2)),
        (b"[[fault:429_emptyx3]]", ("429_empty", 3)),
        (b"[[fault:quota]]", ("quota", None)),
        (b"[[fault:nonsense]] [[fault:hang]]", ("hang", None)),
        (b"no marker", None),
    ],
)
def test_find_marker_kind_and_count(raw: bytes, marker: tuple[str, int | None] | None) -> None:
    assert find_marker(raw) == marker


def test_relay_config_rejects_unknown_fault() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        RelayConfig(faults=("boom",))


# --- Answers over HTTP -----------------------------------------------------------------------


def test_chat_answer_shape_and_usage(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-4o-mini"
    assert isinstance(data["created"], int)
    content = expected_chat_content(CHAT)
    assert data["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    ]
    completion = count_tokens(content)
    assert data["usage"] == {
        "prompt_tokens": 3 + 3,
        "completion_tokens": completion,
        "total_tokens": 6 + completion,
    }


def test_chat_answer_is_deterministic(client: httpx.Client) -> None:
    first = client.post("/chat/completions", json=CHAT)
    second = client.post("/chat/completions", json=CHAT)
    assert first.json()["choices"] == second.json()["choices"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_chat_n_numbers_extra_choices(client: httpx.Client) -> None:
    body = chat("pick", n=3)
    choices = client.post("/chat/completions", json=body).json()["choices"]
    content = expected_chat_content(body)
    assert [c["message"]["content"] for c in choices] == [content, f"{content} #1", f"{content} #2"]
    assert [c["index"] for c in choices] == [0, 1, 2]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_caps_usage(client: httpx.Client, field: str) -> None:
    data = client.post("/chat/completions", json=chat("a b c d e f", n=2, **{field: 2})).json()
    assert [c["finish_reason"] for c in data["choices"]] == ["length", "length"]
    assert data["usage"]["completion_tokens"] == 4


def test_completions_answer_shape(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "once upon"}
    data = client.post("/completions", json=body).json()
    assert data["object"] == "text_completion"
    assert data["choices"] == [
        {"text": expected_completion_text(body), "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    assert data["usage"]["prompt_tokens"] == 2


def test_embeddings_one_per_input_in_order(client: httpx.Client) -> None:
    inputs = ["a", "b c", "你好"]
    data = client.post("/embeddings", json={"model": "e", "input": inputs, "dimensions": 4}).json()
    assert data["object"] == "list"
    assert [d["index"] for d in data["data"]] == [0, 1, 2]
    assert [d["embedding"] for d in data["data"]] == [expected_embedding(x, 4) for x in inputs]
    assert data["usage"] == {"prompt_tokens": 1 + 2 + 3, "total_tokens": 6}


def test_embeddings_token_arrays_count_their_length(client: httpx.Client) -> None:
    one = client.post("/embeddings", json={"model": "e", "input": [1, 2, 3]}).json()
    many = client.post("/embeddings", json={"model": "e", "input": [[1, 2], [3]]}).json()
    assert len(one["data"]) == 1
    assert one["data"][0]["embedding"] == expected_embedding([1, 2, 3], 8)
    assert one["usage"]["prompt_tokens"] == 3
    assert len(many["data"]) == 2
    assert many["usage"]["prompt_tokens"] == 3


def test_embeddings_base64_decodes_to_the_floats(client: httpx.Client) -> None:
    body = {"model": "e", "input": "same text"}
    floats = client.post("/embeddings", json=body).json()["data"][0]["embedding"]
    encoded = client.post("/embeddings", json={**body, "encoding_format": "base64"}).json()["data"][0]
    raw = base64.b64decode(encoded["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats


@pytest.mark.parametrize(
    ("fmt", "content_type"), [(None, "audio/mpeg"), ("opus", "audio/ogg"), ("wav", "audio/wav")]
)
def test_speech_audio_and_content_type(client: httpx.Client, fmt: str | None, content_type: str) -> None:
    body: dict[str, Any] = {"model": "tts-1", "input": "say this", "voice": "alloy"}
    if fmt:
        body["response_format"] = fmt
    r = client.post("/audio/speech", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.content == expected_audio(body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/chat/completions", {"model": "m", "messages": "x"}),
        ("/completions", {"model": "m"}),
        ("/embeddings", {"model": "m", "input": [1, "a"]}),
        ("/embeddings", {"model": "m", "input": "a", "encoding_format": "hex"}),
        ("/audio/speech", {"model": "m", "input": "a", "response_format": "ogg"}),
        ("/chat/completions", [1, 2]),
    ],
)
def test_validation_wrong_shape_is_400(client: httpx.Client, path: str, body: Any) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"


@pytest.mark.parametrize(
    ("path", "headers", "body", "marker", "envelope"),
    [
        ("/messages", {"anthropic-version": "2023-06-01"}, {"model": "c", "max_tokens": 5}, None,
         {"type": "error", "error": {"type": "invalid_request_error",
                                     "message": "messages: must be a non-empty array of message objects"}}),
        (GEMINI, {}, {"contents": []}, None,
         {"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified",
                    "status": "INVALID_ARGUMENT"}}),
        (GEMINI, {}, {"contents": [{"parts": [{"text": "x"}]}]}, "429",
         {"error": {"code": 429, "message": "当前分组上游负载已饱和，请稍后再试", "status": "RESOURCE_EXHAUSTED"}}),
    ],
)  # fmt: skip
def test_native_routes_answer_errors_in_their_own_envelope(
    relay: RelayServer, path: str, headers: dict[str, str], body: Any, marker: str | None, envelope: Any
) -> None:
    """As new-api's Claude and Gemini relay modes: Anthropic's and Google's envelopes, not OpenAI's."""
    if marker is not None:
        relay.set_config(only(marker))
    url = (relay.url.removesuffix("/v1") + path) if path.startswith("/v1beta") else relay.url + path
    r = httpx.post(url, json=body, headers=headers, timeout=5.0)
    assert (r.status_code, r.json()) == (envelope.get("error", {}).get("code", 400), envelope)


# --- Faults ----------------------------------------------------------------------------------


def only(kind: str, **extra: Any) -> RelayConfig:
    return RelayConfig(fault_rate=1.0, faults=(kind,), **extra)


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("500", 500, "application/json"),
        ("502", 502, "text/html"),
        ("503", 503, "text/plain"),
        ("error200", 200, "application/json"),
    ],
)
def test_fault_canned_answers(
    relay: RelayServer, client: httpx.Client, kind: str, status: int, content_type: str
) -> None:
    relay.set_config(only(kind))
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(content_type)
    assert relay.stats()["by_fault"] == {kind: 1}
    assert relay.stats()["served"] == 0


def test_fault_429_sends_retry_after(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("429", retry_after=2.5))
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2.5"
    assert r.headers["retry-after-ms"] == "2500"
    assert r.json()["error"]["code"] == "rate_limit"


def test_fault_429_empty_has_no_body_or_retry_after(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("429_empty"))
    r = client.post("/embeddings", json={"model": "e", "input": "x"})
    assert (r.status_code, r.content) == (429, b"")
    assert "retry-after" not in r.headers


def test_fault_reset_is_a_transport_error(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("reset"))
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=CHAT)
    assert relay.stats()["by_status"] == {"reset": 1}


def test_fault_hang_times_the_client_out(relay: RelayServer) -> None:
    relay.set_config(only("hang", hang_seconds=3.0))
    with httpx.Client(base_url=relay.url, timeout=0.2) as c, pytest.raises(httpx.TimeoutException):
        c.post("/chat/completions", json=CHAT)
    wait_for(lambda: relay.stats()["by_status"] == {"hang": 1})
    # The upstream work had started: a relay bills it, though the client saw no usage.
    assert relay.stats()["served"] == 1
    assert relay.stats()["reported_usage"]["total_tokens"] == 0
    assert relay.stats()["usage"]["total_tokens"] > 0


def test_fault_hang_answers_after_hang_seconds(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("hang", hang_seconds=0.05))
    r = client.post("/chat/completions", json=CHAT)
    assert r.json()["choices"][0]["message"]["content"] == expected_chat_content(CHAT)


def test_released_hangs_answer_at_once_and_later_hangs_hold_again(relay: RelayServer) -> None:
    relay.set_config(only("hang", hang_seconds=600.0))
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=relay.url, timeout=30) as c:
        held = pool.submit(c.post, "/chat/completions", json=CHAT)
        wait_for(lambda: relay.in_flight() == 1)
        relay.release_hangs()
        assert held.result().json()["choices"][0]["message"]["content"] == expected_chat_content(CHAT)
    with httpx.Client(base_url=relay.url, timeout=0.2) as c, pytest.raises(httpx.TimeoutException):
        c.post("/chat/completions", json=CHAT)  # the release was for the calls held then


def test_fault_truncated_json_is_half_the_answer(relay: RelayServer, client: httpx.Client) -> None:
    full = client.post("/chat/completions", json=CHAT).content
    relay.set_config(only("truncated"))
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == full[: len(full) // 2]
    assert relay.stats()["served"] == 2


def test_fault_truncated_audio_breaks_the_transfer(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("truncated"))
    with pytest.raises(httpx.TransportError):
        client.post("/audio/speech", json={"model": "tts-1", "input": "hello", "voice": "alloy"})
    assert relay.stats()["usage"]["characters"] == 5


def test_fault_missing_usage_still_counts_usage(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(only("missing_usage"))
    data = client.post("/chat/completions", json=CHAT).json()
    assert "usage" not in data
    assert data["choices"][0]["message"]["content"] == expected_chat_content(CHAT)
    stats = relay.stats()
    assert stats["served"] == 1
    assert stats["usage"]["total_tokens"] == 6 + count_tokens(expected_chat_content(CHAT))


def test_fault_rate_draws_every_kind(relay: RelayServer) -> None:
    """Every random kind shows up over enough calls; seeded, so the mix is reproducible."""
    relay.set_config(RelayConfig(fault_rate=1.0, hang_seconds=0.01, seed=7))
    with httpx.Client(base_url=relay.url, timeout=5.0) as c:
        for i in range(150):
            with contextlib.suppress(httpx.TransportError):
                c.post("/chat/completions", json=chat(f"call {i}"))
    assert set(relay.stats()["by_fault"]) == set(ALL_FAULTS)


def test_fault_rate_zero_never_faults(relay: RelayServer, client: httpx.Client) -> None:
    for i in range(20):
        assert client.post("/chat/completions", json=chat(f"{i}")).status_code == 200
    assert relay.stats()["by_fault"] == {}


# --- Markers ---------------------------------------------------------------------------------


def test_marker_times_then_success(relay: RelayServer, client: httpx.Client) -> None:
    body = chat("do it [[fault:500x2]]")
    statuses = [client.post("/chat/completions", json=body).status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert relay.stats()["per_key"] == {body_key(body): 4}


def test_marker_without_count_is_permanent(client: httpx.Client) -> None:
    body = {"model": "e", "input": ["ok", "bad [[fault:quota]]"]}
    for _ in range(3):
        r = client.post("/embeddings", json=body)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "insufficient_user_quota"


@pytest.mark.parametrize(("kind", "status"), [("400", 400), ("401", 401), ("404", 404), ("429", 429)])
def test_marker_forces_status_without_fault_rate(client: httpx.Client, kind: str, status: int) -> None:
    r = client.post("/completions", json={"model": "m", "prompt": f"[[fault:{kind}]]"})
    assert r.status_code == status


def test_marker_reset_then_success(client: httpx.Client) -> None:
    body = chat("[[fault:resetx1]]")
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=body)
    assert client.post("/chat/completions", json=body).status_code == 200


# --- Auth and rate limit ---------------------------------------------------------------------


def test_api_key_required(relay: RelayServer) -> None:
    relay.set_config(RelayConfig(api_key="sk-test"))
    with httpx.Client(base_url=relay.url) as anonymous:
        r = anonymous.post("/chat/completions", json=CHAT)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "one_api_error"
        wrong = anonymous.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-no"})
        assert wrong.status_code == 401
    with httpx.Client(base_url=relay.url, headers={"Authorization": "Bearer sk-test"}) as c:
        assert c.post("/chat/completions", json=CHAT).status_code == 200


def test_rps_limit_caps_answers_per_second(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(RelayConfig(rps_limit=10))
    responses = [client.post("/chat/completions", json=chat(f"{i}")) for i in range(30)]
    limited = [r for r in responses if r.status_code == 429]
    stats = relay.stats()
    assert limited, "30 quick requests must overrun 10 per second"
    assert 0 < float(limited[0].headers["retry-after"]) <= 1
    assert stats["rate_limited"] == len(limited)
    assert max(stats["answered_per_second"].values()) <= 10
    assert sum(stats["per_second"].values()) == 30


# --- Counters --------------------------------------------------------------------------------


def test_stats_counts_calls_statuses_and_usage(relay: RelayServer, client: httpx.Client) -> None:
    client.post("/chat/completions", json=CHAT)
    client.post("/chat/completions", json=chat("[[fault:502]]"))
    client.post("/audio/speech", json={"model": "t", "input": "four", "voice": "v"})
    stats = relay.stats()
    assert stats["calls"] == 3
    assert stats["served"] == 2
    assert stats["by_status"] == {200: 2, 502: 1}
    assert stats["by_fault"] == {"502": 1}
    tokens = 6 + count_tokens(expected_chat_content(CHAT))
    assert stats["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": tokens - 6,
        "total_tokens": tokens,
        "characters": 4,
        "seconds": 0,
        "images": 0,
    }


def test_stats_http_endpoint_and_reset(relay: RelayServer, client: httpx.Client) -> None:
    root = relay.url.removesuffix("/v1")
    body = chat("[[fault:500x1]]")
    client.post("/chat/completions", json=body)
    remote = httpx.get(f"{root}/_stats").json()
    assert remote["calls"] == 1
    assert remote["by_status"] == {"500": 1}
    assert httpx.post(f"{root}/_reset").status_code == 200
    assert relay.stats()["calls"] == 0
    assert client.post("/chat/completions", json=body).status_code == 500  # marker counts restart too


def test_relay_server_stop_cancels_a_hang() -> None:
    """Stopping with a request still hanging returns promptly and leaks nothing (warnings are errors)."""
    server = RelayServer(only("hang", hang_seconds=60)).start()
    with httpx.Client(base_url=server.url, timeout=30) as c, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(c.post, "/chat/completions", json=CHAT)
        wait_for(lambda: server.stats()["calls"] == 1)
        server.stop()
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=10)
    with pytest.raises(RuntimeError, match="not running"):
        server.stats()


def test_billing_endpoints_answer_batcher_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    """`batcher balance` works offline: limit from --balance-usd, 0.1 cent used per answer."""
    with RelayServer(RelayConfig(api_key=RELAY_KEY)) as relay:
        monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
        monkeypatch.setenv("OPENAI_API_KEY", RELAY_KEY)
        headers = {"Authorization": f"Bearer {RELAY_KEY}"}
        httpx.post(f"{relay.url}/embeddings", json={"model": "m", "input": "x"}, headers=headers)
        result = invoke("balance", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == {
            "limit_usd": "100.0",
            "used_usd": "0.001",
            "remaining_usd": "99.999",
        }
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0000000000")
        assert invoke("balance").exit_code == 1


def test_faults_help_lists_every_kind_and_the_markers() -> None:
    text = " ".join(invoke("dev-relay", "--help").stdout.split())
    for kind in ALL_FAULTS + PERMANENT_FAULTS:
        assert kind in text
    assert "[[fault:KIND]]" in text and "[[fault:KINDxN]]" in text


# --- Models it serves, quota ---------------------------------------------------------------------


def test_without_a_model_list_it_serves_any_model_and_lists_none(
    relay: RelayServer, client: httpx.Client
) -> None:
    assert client.get("/models").status_code == 404
    assert client.post("/chat/completions", json=chat("hi")).status_code == 200


def test_with_models_it_lists_them_and_refuses_others_as_one_api_does(
    relay: RelayServer, client: httpx.Client
) -> None:
    relay.set_config(RelayConfig(models=("m", "e")))
    listed = client.get("/models").json()
    assert [m["id"] for m in listed["data"]] == ["m", "e"]
    assert client.post("/chat/completions", json=chat("hi")).status_code == 200
    refused = client.post("/chat/completions", json=chat("hi") | {"model": "other"})
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert "no available channel" in refused.json()["error"]["message"]


def test_quota_after_n_answers_every_call_is_out_of_quota(relay: RelayServer, client: httpx.Client) -> None:
    relay.set_config(RelayConfig(quota_after=2))
    assert [client.post("/chat/completions", json=chat(str(i))).status_code for i in range(4)] == [
        200, 200, 403, 403
    ]  # fmt: skip
    assert (
        client.post("/chat/completions", json=chat("x")).json()["error"]["code"] == "insufficient_user_quota"
    )
