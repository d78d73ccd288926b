"""Routing across providers and keys: by model with globs, spread by the keys' limits, failover on
a down provider, an exhausted quota and a missing model, never the same route twice for one call."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import orjson
import pytest
from pydantic import SecretStr

from jobs.errors import ConfigError
from jobs.providers import KeyRef, Provider, ProviderConfig
from workers.catalog import ModelCatalog
from workers.client import ApiClient, ClientConfig, NoAnswer, RawResponse
from workers.endpoints.base import RequestContent
from workers.endpoints.chat import CHAT
from workers.endpoints.claude import MESSAGES
from workers.endpoints.transcriptions import TRANSCRIPTIONS
from workers.ratelimit import InProcessLimiter, Limits
from workers.routing import BENCH_S, Route, Router, build_router, failover_scope

Handler = Callable[[httpx.Request], httpx.Response]
OK = {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
NOT_FOUND = {
    "error": {
        "message": "当前分组下对于模型 x 无可用渠道",
        "type": "new_api_error",
        "code": "model_not_found",
    }
}
QUOTA = {"error": {"message": "用户额度不足", "type": "one_api_error", "code": "insufficient_user_quota"}}


class Relay:
    """A provider behind a MockTransport: answers ``answer`` and counts calls per key."""

    def __init__(self, name: str, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.name = name
        self.calls: Counter[str] = Counter()
        self.answer = answer or (lambda request: httpx.Response(200, json=OK))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls[request.headers.get("authorization", "")] += 1
        return self.answer(request)

    def route(self, key: str = "k1", *, models: tuple[str, ...] = (), weight: float = 1.0) -> Route:
        config = ClientConfig(f"https://{self.name}.test/v1", f"sk-{self.name}-{key}-0000")
        client = ApiClient(config, transport=httpx.MockTransport(self.handler))
        catalog = ModelCatalog.of(models) if models else None
        return Route(self.name, key, client, catalog, weight=weight)


def body(model: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})


def send(router: Router, model: str) -> RawResponse | NoAnswer:
    return asyncio.run(router.send(CHAT, RequestContent(body(model))))


def sends(router: Router, models: list[str]) -> list[RawResponse | NoAnswer]:
    async def go() -> list[RawResponse | NoAnswer]:
        return [await router.send(CHAT, RequestContent(body(m))) for m in models]

    return asyncio.run(go())


def test_lines_go_to_the_provider_whose_names_or_globs_serve_their_model() -> None:
    a, b = Relay("a"), Relay("b")
    router = Router([a.route(models=("gpt-4o-mini", "text-embedding-*")), b.route(models=("claude-*",))])
    answers = sends(router, ["gpt-4o-mini", "claude-3-5", "text-embedding-3-small", "claude-x"])
    assert [r.route for r in answers] == ["a/k1", "b/k1", "a/k1", "b/k1"]
    assert sum(a.calls.values()) == 2 and sum(b.calls.values()) == 2


def test_a_model_no_provider_serves_is_a_model_not_found_without_a_call() -> None:
    a = Relay("a")
    [answer] = sends(Router([a.route(models=("gpt-4o",))]), ["llama"])
    assert isinstance(answer, RawResponse) and answer.status == 404
    assert orjson.loads(answer.content)["error"]["code"] == "model_not_found"
    assert not a.calls


def test_two_keys_share_calls_in_proportion_to_their_limits() -> None:
    a = Relay("a")
    router = Router([a.route("big", weight=300), a.route("small", weight=100)])
    answers = sends(router, ["m"] * 400)
    shares = Counter(r.route for r in answers)
    assert shares == {"a/big": 300, "a/small": 100}
    assert [r.route for r in answers[:4]].count("a/small") == 1  # interleaved, not in blocks


def test_failover_on_model_not_found_to_the_next_provider_and_the_route_is_benched() -> None:
    a = Relay("a", lambda r: httpx.Response(404, json=NOT_FOUND))
    b = Relay("b")
    clock = [0.0]
    router = Router([a.route(), b.route()], clock=lambda: clock[0])
    answers = sends(router, ["m", "m", "m"])
    assert [r.route for r in answers] == ["b/k1"] * 3
    assert sum(a.calls.values()) == 1  # benched after its refusal: not asked again
    assert isinstance(answers[0], RawResponse) and answers[0].status == 200
    first = router.routes[0]
    assert first.on_bench("m", clock[0]) and not first.on_bench("other", clock[0])  # for that model only
    clock[0] += BENCH_S + 1
    sends(router, ["m", "m"])
    assert sum(a.calls.values()) == 2  # asked once more after the bench, refused, benched again


def test_failover_on_quota_benches_the_key_for_every_model() -> None:
    a = Relay("a", lambda r: httpx.Response(403, json=QUOTA))
    b = Relay("b")
    router = Router([a.route(), b.route()])
    answers = sends(router, ["m", "n", "o"])
    assert {r.route for r in answers} == {"b/k1"}
    assert sum(a.calls.values()) == 1


def test_failover_when_a_provider_is_down_sends_the_call_elsewhere() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down, up = Relay("down", refuse), Relay("up")
    router = Router([down.route(), up.route()])
    [answer] = sends(router, ["m"])
    assert isinstance(answer, RawResponse) and answer.route == "up/k1"


def test_when_every_route_fails_over_the_last_answer_is_returned_each_route_once() -> None:
    a = Relay("a", lambda r: httpx.Response(404, json=NOT_FOUND))
    b = Relay("b", lambda r: httpx.Response(404, json=NOT_FOUND))
    [answer] = sends(Router([a.route(), b.route()]), ["m"])
    assert isinstance(answer, RawResponse) and answer.status == 404
    assert (sum(a.calls.values()), sum(b.calls.values())) == (1, 1)


@pytest.mark.parametrize(
    ("answer", "scope"),
    [
        (RawResponse(404, httpx.Headers(), orjson.dumps(NOT_FOUND)), "model"),
        (RawResponse(403, httpx.Headers(), orjson.dumps(QUOTA)), "*"),
        (
            RawResponse(
                401, httpx.Headers(), b'{"error": {"message": "bad key", "code": "invalid_api_key"}}'
            ),
            "*",
        ),
        (RawResponse(400, httpx.Headers(), b'{"error": {"message": "messages is required"}}'), None),
        (RawResponse(500, httpx.Headers(), b"{}"), None),  # may have been billed: the retry policy's
        (RawResponse(429, httpx.Headers(), b"{}"), None),
        (RawResponse(200, httpx.Headers(), orjson.dumps(OK)), None),
    ],
)
def test_which_answers_fail_over(answer: RawResponse, scope: str | None) -> None:
    assert failover_scope(answer) == scope


def test_a_timeout_is_not_failed_over_it_may_have_been_billed() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    a, b = Relay("a", slow), Relay("b")
    [answer] = sends(Router([a.route(), b.route()]), ["m"])
    assert isinstance(answer, NoAnswer) and answer.route == "a/k1"
    assert not b.calls


def test_build_router_uses_present_keys_headers_and_per_key_limits() -> None:
    seen: list[ClientConfig] = []

    def client(config: ClientConfig) -> ApiClient:
        seen.append(config)
        return ApiClient(config, transport=httpx.MockTransport(lambda r: httpx.Response(200, json=OK)))

    config = ProviderConfig(
        name="a", base_url="https://a.test", keys=("A1", "A2", "A3"), rpm=600, headers={"X-Team": "evals"},
        key_limits={"A2": {"rpm": 200}},  # type: ignore[dict-item]
    )  # fmt: skip
    keys = (KeyRef("A1", SecretStr("sk-one-1111")), KeyRef("A2", SecretStr("sk-two-2222")), KeyRef("A3"))
    router = build_router([Provider(config, keys, "f")], ClientConfig("https://x.test/v1"), client=client,
                          limiter=InProcessLimiter)  # fmt: skip
    assert [r.name for r in router.routes] == ["a/A1 …1111", "a/A2 …2222"]  # A3 is not set
    assert [r.weight for r in router.routes] == [600, 200]
    assert [c.base_url for c in seen] == ["https://a.test/v1"] * 2
    assert [c.api_key for c in seen] == ["sk-one-1111", "sk-two-2222"]
    assert seen[0].headers == (("X-Team", "evals"),)
    assert all(r.limiter is not None for r in router.routes)


def test_build_router_without_any_key_says_which_variables_to_set() -> None:
    provider = Provider(
        ProviderConfig(name="a", base_url="https://a.test", keys=("A1",)), (KeyRef("A1"),), "f"
    )
    with pytest.raises(ConfigError, match="A1"):
        build_router(
            [provider], ClientConfig("https://x.test/v1"), client=ApiClient, limiter=InProcessLimiter
        )


def test_a_key_with_a_limit_waits_for_its_own_limiter() -> None:
    acquired: list[str] = []

    class Recording(InProcessLimiter):
        async def acquire(self, key: str, tokens: int):  # type: ignore[no-untyped-def]
            acquired.append(key)
            return await super().acquire(key, tokens)

    a = Relay("a")
    route = a.route()
    route.limiter = Recording(Limits(rpm=6000))
    sends(Router([route]), ["m", "m"])
    assert acquired == ["a/k1|m", "a/k1|m"]


def test_a_body_naming_no_model_may_go_to_any_route() -> None:
    a = Relay("a")
    router = Router([a.route(models=("gpt-4o",))])
    upload = RequestContent(b"--boundary\r\n", content_type="multipart/form-data; boundary=x")
    answer = asyncio.run(router.send(TRANSCRIPTIONS, upload))
    assert isinstance(answer, RawResponse) and answer.route == "a/k1"


def test_a_multipart_line_goes_by_the_model_its_line_names() -> None:
    a, b = Relay("a"), Relay("b")
    router = Router([a.route(models=("gpt-4o",)), b.route(models=("whisper-*",))])
    upload = RequestContent(b"--boundary\r\n", content_type="multipart/form-data; boundary=x")
    answer = asyncio.run(router.send(TRANSCRIPTIONS, upload, model="whisper-1"))
    assert isinstance(answer, RawResponse) and answer.route == "b/k1"
    assert not a.calls and sum(b.calls.values()) == 1


def test_a_family_key_header_carries_the_routes_own_key() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("x-api-key"), request.headers.get("anthropic-version")))
        return httpx.Response(200, json=OK)

    a, b = Relay("a", answer), Relay("b", answer)
    router = Router([a.route(models=("gpt-*",)), b.route(models=("claude-*",))])
    request = RequestContent(
        body("claude-x"), headers=(("anthropic-version", "2023-06-01"),), key_headers=("x-api-key",)
    )
    asyncio.run(router.send(MESSAGES, request))
    assert seen == [("sk-b-k1-0000", "2023-06-01")]
