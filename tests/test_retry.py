"""The retry policy, pinned by tables: classification on status + body, Retry-After, backoff."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import orjson
import pytest

from workers.endpoints.chat import CHAT
from workers.retry import (
    Throttle,
    Verdict,
    backoff_delay,
    classify_exception,
    classify_response,
    next_delay,
    out_of_patience,
    parse_error_body,
    parse_retry_after,
    should_retry,
)

NOW = 1_700_000_000.0
JSON = {"content-type": "application/json"}


def err(message: str, kind: str | None = None, code: str | int | None = None) -> bytes:
    import orjson

    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


@pytest.mark.parametrize(
    ("status", "headers", "body", "verdict", "error_class", "code", "text"),
    [
        (200, JSON, b'{"id": "x", "choices": []}', Verdict.OK, "ok", None, ""),
        (200, JSON, b'{"id": "x", "error": null}', Verdict.OK, "ok", None, ""),
        (
            200,
            JSON,
            err("upstream error: 上游服务异常", "upstream_error", "bad_response"),
            Verdict.RETRY,
            "error_in_200",
            "bad_response",
            "上游服务异常",
        ),
        (
            200,
            JSON,
            err("用户额度不足", "one_api_error", "insufficient_user_quota"),
            Verdict.FATAL,
            "quota",
            "insufficient_user_quota",
            "额度",
        ),
        (
            200,
            JSON,
            '{"error": "当前分组上游负载已饱和，请稍后再试"}'.encode(),
            Verdict.RETRY,
            "rate_limited",
            None,
            "负载已饱和",
        ),
        (200, JSON, b'{"id": "x", "choi', Verdict.RETRY, "bad_body", None, "truncated"),
        (
            200,
            {"content-type": "text/html"},
            b"<html>oops</html>",
            Verdict.RETRY,
            "bad_body",
            None,
            "non-JSON",
        ),
        (200, JSON, b"[1, 2]", Verdict.RETRY, "bad_body", None, "list"),
        (429, {}, b"", Verdict.RETRY, "rate_limited", None, "429"),
        (
            429,
            JSON,
            err("当前分组上游负载已饱和，请稍后再试", "new_api_error", "rate_limit"),
            Verdict.RETRY,
            "rate_limited",
            "rate_limit",
            "负载已饱和",
        ),
        (
            429,
            JSON,
            err("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            Verdict.FATAL,
            "quota",
            "insufficient_quota",
            "quota",
        ),
        (
            429,
            JSON,
            err("Resource has been exhausted (e.g. check quota).", "upstream_error"),
            Verdict.RETRY,
            "rate_limited",
            "upstream_error",
            "exhausted",
        ),
        (
            500,
            JSON,
            err("do request failed", "one_api_error", "do_request_failed"),
            Verdict.RETRY,
            "server_error",
            "do_request_failed",
            "do request failed",
        ),
        (
            502,
            {"content-type": "text/html"},
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            Verdict.RETRY,
            "server_error",
            None,
            "502 Bad Gateway",
        ),
        (
            503,
            {},
            b"upstream connect error or disconnect/reset before headers",
            Verdict.RETRY,
            "server_error",
            None,
            "upstream connect error",
        ),
        (408, {}, b"", Verdict.RETRY, "request_timeout", None, "408"),
        (409, {}, b"", Verdict.RETRY, "conflict", None, "409"),
        (
            401,
            JSON,
            err("无效的令牌", "one_api_error", "invalid_api_key"),
            Verdict.FATAL,
            "auth",
            "invalid_api_key",
            "无效的令牌",
        ),
        (
            403,
            JSON,
            err("该令牌无权访问模型", "one_api_error"),
            Verdict.FATAL,
            "auth",
            "one_api_error",
            "无权",
        ),
        (403, JSON, err("用户余额不足"), Verdict.FATAL, "quota", None, "余额"),
        (402, JSON, b'{"message": "payment required"}', Verdict.FATAL, "quota", None, "payment"),
        (
            400,
            JSON,
            err("invalid messages", "invalid_request_error"),
            Verdict.PERMANENT,
            "bad_request",
            "invalid_request_error",
            "invalid messages",
        ),
        (
            404,
            JSON,
            b'{"detail": "model not found"}',
            Verdict.PERMANENT,
            "not_found",
            None,
            "model not found",
        ),
        (413, {}, b"too large", Verdict.PERMANENT, "too_large", None, "too large"),
        (422, JSON, b'{"msg": "bad field"}', Verdict.PERMANENT, "unprocessable", None, "bad field"),
        (418, {}, b"teapot", Verdict.PERMANENT, "client_error", None, "teapot"),
    ],
)
def test_classify_response_table(
    status: int,
    headers: dict[str, str],
    body: bytes,
    verdict: Verdict,
    error_class: str,
    code: str | None,
    text: str,
) -> None:
    c = classify_response(status, headers, body, now=NOW)
    assert (c.verdict, c.error_class, c.code) == (verdict, error_class, code)
    assert text in c.message


@pytest.mark.parametrize(
    ("headers", "body", "verdict"),
    [
        ({"content-type": "audio/mpeg"}, b"ID3\x04audio", Verdict.OK),
        ({"content-type": "audio/mpeg"}, b"", Verdict.RETRY),
        (JSON, err("upstream error"), Verdict.RETRY),
    ],
)
def test_classify_speech_answers(headers: dict[str, str], body: bytes, verdict: Verdict) -> None:
    assert classify_response(200, headers, body, now=NOW, binary_ok=True).verdict == verdict


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", (None, None, None)),
        (err("m", "t", 42), ("m", "t", "42")),
        (b'{"error": "plain text error"}', ("plain text error", None, None)),
        (b'{"message": "msg", "success": false}', ("msg", None, None)),
        (b'{"detail": "d"}', ("d", None, None)),
        (b"<html><title> Oops </title></html>", ("Oops", None, None)),
        (b"plain  text\nbody", ("plain text body", None, None)),
    ],
)
def test_parse_error_body_table(body: bytes, expected: tuple[str | None, str | None, str | None]) -> None:
    assert parse_error_body(body) == expected


def test_long_messages_are_cut() -> None:
    message = parse_error_body(err("x" * 2000))[0] or ""
    assert len(message) == 500


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.37"}, 0.37),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"}, 10.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "99999"}, None),
    ],
)
@pytest.mark.parametrize("kind", [dict, httpx.Headers], ids=["dict", "httpx-headers"])
def test_parse_retry_after_table(
    headers: dict[str, str], expected: float | None, kind: Callable[[dict[str, str]], Mapping[str, str]]
) -> None:
    """A plain mapping is searched without regard to case; httpx's headers ignore case themselves."""
    given = kind(headers)
    assert (
        parse_retry_after(given, now=NOW) == pytest.approx(expected)
        if expected
        else parse_retry_after(given, now=NOW) is None
    )


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, 0.0, 0.5),
        (2, 0.0, 1.0),
        (3, 0.0, 2.0),
        (1, 1.0, 0.375),
        (3, 0.5, 1.75),
        (10, 0.0, 30.0),
        (10, 1.0, 22.5),
    ],
)
def test_backoff_delay_table(attempt: int, jitter: float, expected: float) -> None:
    assert backoff_delay(attempt, jitter=jitter) == pytest.approx(expected)


def test_next_delay_prefers_retry_after_and_should_retry_caps() -> None:
    c = classify_response(500, {"retry-after": "3"}, b"", now=NOW)
    assert next_delay(c, 1, jitter=0.0) == 3.0
    assert next_delay(classify_response(503, {}, b"", now=NOW), 2, jitter=0.0) == 1.0
    assert should_retry(c, 2, 3)
    assert not should_retry(c, 3, 3)
    assert not should_retry(classify_response(400, {}, b"", now=NOW), 1, 3)


def test_a_throttle_never_uses_up_the_attempts() -> None:
    c = classify_response(429, {"retry-after": "3"}, b"", now=NOW)
    assert not c.counts_attempt
    assert should_retry(c, 99, 3)
    assert next_delay(c, 1, jitter=0.0) == 3.0
    assert next_delay(classify_response(429, {}, b"", now=NOW), 10, jitter=0.0) == 5.0  # capped lower


OVERLOAD = err("当前分组上游负载已饱和，请稍后再试", "new_api_error", "upstream_overloaded")


@pytest.mark.parametrize(
    ("status", "body", "throttle", "error_class"),
    [
        (429, b"", Throttle.RATE, "rate_limited"),
        (
            429,
            err("当前分组上游负载已饱和，请稍后再试", "new_api_error", "rate_limit"),
            Throttle.RATE,
            "rate_limited",
        ),
        (429, err("Rate limit reached", "requests", "rate_limit_exceeded"), Throttle.RATE, "rate_limited"),
        (503, OVERLOAD, Throttle.OVERLOAD, "overloaded"),
        (500, err("当前分组上游负载已饱和，请稍后再试"), Throttle.OVERLOAD, "overloaded"),
        (529, err("Overloaded", "overloaded_error"), Throttle.OVERLOAD, "overloaded"),
        (200, OVERLOAD, Throttle.OVERLOAD, "overloaded"),
        (200, '{"error": "当前分组上游负载已饱和，请稍后再试"}'.encode(), Throttle.RATE, "rate_limited"),
        (
            200,
            err("当前分组上游负载已饱和", "rate_limit_error", "rate_limit_exceeded"),
            Throttle.RATE,
            "rate_limited",
        ),
        (200, err("Too many requests, slow down"), Throttle.RATE, "rate_limited"),
        (503, b"upstream connect error or disconnect/reset before headers", None, "server_error"),
        (502, err("bad gateway"), None, "server_error"),
        (400, err("the model is overloaded with options"), None, "bad_request"),
        (200, err("upstream error: 上游服务异常", "upstream_error", "bad_response"), None, "error_in_200"),
    ],
)
def test_throttles_table(status: int, body: bytes, throttle: Throttle | None, error_class: str) -> None:
    c = classify_response(status, JSON, body, now=NOW)
    assert (c.throttle, c.error_class) == (throttle, error_class)
    assert c.counts_attempt is (throttle is None)


@pytest.mark.parametrize(
    "body",
    [
        err("当前分组上游负载已饱和，请稍后再试", "insufficient_quota", "insufficient_user_quota"),
        err("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
    ],
)
def test_quota_stays_fatal_even_worded_like_a_rate_limit(body: bytes) -> None:
    for status in (429, 200):
        assert classify_response(status, JSON, body, now=NOW).verdict == Verdict.FATAL


@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({"retry-after-ms": "12", "retry-after": "5"}, None, 0.012),
        ({"llm_provider-retry-after-ms": "558"}, None, 0.558),
        ({"llm_provider-retry-after": "2"}, None, 2.0),
        ({"retry-after": "1", "llm_provider-retry-after-ms": "558"}, None, 1.0),  # the standard name wins
        ({}, "Rate limit reached. Please try again in 558ms.", 0.558),
        ({}, "Please try again in 1.5s.", 1.5),
        ({}, "Limit 3, Used 3, Requested 1. Please try again in 6m0s. Visit ...", 360.0),
        ({"retry-after": "2"}, "Please try again in 558ms.", 2.0),  # a header wins over the message
        ({}, "Please try again later.", None),
        # x-ratelimit-reset-* is not a Retry-After: a window's reset is not the server naming a wait
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "59.5s"}, None, None),
    ],
)
def test_retry_after_spellings_table(
    headers: dict[str, str], message: str | None, expected: float | None
) -> None:
    body = err(message, "requests", "rate_limit_exceeded") if message else b""
    c = classify_response(429, headers, body, now=NOW)
    assert c.retry_after == (pytest.approx(expected) if expected is not None else None)


def test_out_of_patience() -> None:
    assert not out_of_patience(10.0, None)
    assert not out_of_patience(10.0, 60.0)
    assert out_of_patience(60.0, 60.0)


@pytest.mark.parametrize(
    ("exc", "error_class", "sent"),
    [
        (httpx.ConnectError("refused"), "connection", False),
        (httpx.ReadTimeout("slow"), "timeout", True),
        (httpx.ConnectTimeout("slow connect"), "timeout", True),
        (httpx.PoolTimeout("pool"), "timeout", False),
        (httpx.RemoteProtocolError("peer closed"), "connection", True),
        (httpx.ReadError("reset"), "connection", True),
    ],
)
def test_classify_exception_table(exc: Exception, error_class: str, sent: bool) -> None:
    c = classify_exception(exc)
    assert (c.verdict, c.error_class, c.sent) == (Verdict.RETRY, error_class, sent)


async def test_classify_exception_refused_connection_behind_aiohttp_was_never_sent() -> None:
    """httpx-aiohttp reports a refused connection as ConnectTimeout; it still was never sent."""
    from workers.client import ApiClient, ClientConfig, NoAnswer

    async with ApiClient(ClientConfig("http://127.0.0.1:1/v1", "sk-x-00000000")) as client:
        answer = await client.call(CHAT, b"{}")  # the client translates with classify_exception
    assert isinstance(answer, NoAnswer)
    c = answer.classification
    assert (c.error_class, c.sent) == ("connection", False)
    assert "cannot connect" in c.message


@pytest.mark.parametrize(
    ("body", "wait"),
    [
        ('{"error": "当前分组上游负载已饱和，请稍后再试"}'.encode(), 1.5),  # the relay's Retry-After
        (b'{"id": "x", "choices": []}', None),  # a 200 that is an answer: its headers are not read
    ],
)
def test_a_200s_retry_after_is_read_for_an_error_inside_it(body: bytes, wait: float | None) -> None:
    c = classify_response(200, httpx.Headers({"Retry-After-Ms": "1500"}), body, now=NOW)
    assert c.retry_after == wait


def test_classify_exception_rejects_other_errors() -> None:
    with pytest.raises(TypeError):
        classify_exception(ValueError("not transport"))


def test_a_redirect_fails_its_line_naming_the_location() -> None:
    c = classify_response(301, {"location": "https://relay.example/v1/chat/completions"}, b"", now=NOW)
    assert (c.verdict, c.error_class) == (Verdict.PERMANENT, "redirect")
    assert "https://relay.example/v1/chat/completions" in c.message


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, b'{"error": {"message": "401: invalid token", "code": "401"}}', "401: invalid token"),
        (503, b'{"error": {"message": "503 Service Unavailable", "type": "503"}}', "503 Service Unavailable"),
        (404, b"404: Not Found", "404: Not Found"),
        (400, b'{"error": {"message": "bad thing", "code": "invalid_request_error"}}',
         "400 invalid_request_error: bad thing"),
        (500, b'{"error": {"message": "500"}}', "500"),
        (429, b'{"error": {"message": "429 too many", "code": "rate_limit"}}', "429 rate_limit: too many"),
    ],
)  # fmt: skip
def test_messages_say_their_status_once(status: int, body: bytes, message: str) -> None:
    assert classify_response(status, {}, body, now=NOW).message == message


def _anthropic(kind: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": f"{kind} (request id: x)"}})


@pytest.mark.parametrize(
    ("status", "kind", "verdict", "throttle", "error_class"),
    [
        (529, "overloaded_error", Verdict.RETRY, Throttle.OVERLOAD, "overloaded"),
        (500, "overloaded_error", Verdict.RETRY, Throttle.OVERLOAD, "overloaded"),
        (200, "overloaded_error", Verdict.RETRY, Throttle.OVERLOAD, "overloaded"),
        (429, "rate_limit_error", Verdict.RETRY, Throttle.RATE, "rate_limited"),
        (400, "rate_limit_error", Verdict.RETRY, Throttle.RATE, "rate_limited"),
        (401, "authentication_error", Verdict.FATAL, None, "auth"),
        (400, "authentication_error", Verdict.FATAL, None, "auth"),
        (403, "permission_error", Verdict.FATAL, None, "auth"),
        (400, "invalid_request_error", Verdict.PERMANENT, None, "bad_request"),
        (500, "api_error", Verdict.RETRY, None, "server_error"),
    ],
)
def test_anthropic_error_envelope_table(
    status: int, kind: str, verdict: Verdict, throttle: Throttle | None, error_class: str
) -> None:
    """Claude native answers errors as {"type": "error", "error": {"type": ...}}; 529 is overload."""
    c = classify_response(status, {}, _anthropic(kind), now=0)
    assert (c.verdict, c.throttle, c.error_class) == (verdict, throttle, error_class)
    assert kind in c.message


def _google(code: int, status: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status}})


@pytest.mark.parametrize(
    ("status", "state", "message", "verdict", "throttle", "error_class"),
    [
        (400, "INVALID_ARGUMENT", "* contents: contents is not specified", Verdict.PERMANENT, None, "bad_request"),
        (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", Verdict.RETRY,
         Throttle.RATE, "rate_limited"),
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", Verdict.RETRY,
         Throttle.OVERLOAD, "overloaded"),
        (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers", Verdict.FATAL, None, "auth"),
        (404, "NOT_FOUND", "models/x is not found for API version v1beta", Verdict.PERMANENT, None, "not_found"),
    ],
)  # fmt: skip
def test_google_error_envelope_table(
    status: int, state: str, message: str, verdict: Verdict, throttle: Throttle | None, error_class: str
) -> None:
    """Gemini native answers {"error": {"code": 400, "message", "status": "INVALID_ARGUMENT"}}."""
    c = classify_response(status, {}, _google(status, state, message), now=0)
    assert (c.verdict, c.throttle, c.error_class, c.code) == (verdict, throttle, error_class, state)
    assert c.message == f"{status} {state}: {message}"
