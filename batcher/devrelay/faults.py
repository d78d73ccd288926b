"""The stand-in relay's faults: the kinds, the ``[[fault:KIND]]`` markers and the canned error answers.

Faults come two ways: at random (``RelayConfig.fault_rate`` over ``faults``, from one seeded RNG)
or forced by a marker in the request, ``[[fault:KIND]]`` (every call) or ``[[fault:KINDxN]]``
(the first N calls of that identical body, then success). The marker is searched in the raw
request bytes, so it may sit in any message, prompt or input text. A body with a marker never
gets a random fault, so marker tests are exact.
"""

from __future__ import annotations

import re

import orjson

ALL_FAULTS: tuple[str, ...] = (
    "429",
    "429_empty",
    "500",
    "502",
    "503",
    "hang",
    "reset",
    "truncated",
    "error200",
    "missing_usage",
)
"""The fault kinds a call may draw at random."""

PERMANENT_FAULTS: tuple[str, ...] = ("400", "401", "quota", "404")
"""Kinds only a marker can force: errors a retry does not cure."""

GATEWAY_FAULTS: tuple[str, ...] = (
    "zero_usage",
    "error_audio",
    "nodb400",
    "plain500",
    "redirect",
    "overload200",
    "model404",
    "overloaded529",
    "stream_cut",
    "stream_overload",
)
"""What real gateways were seen doing (issue 11), forced by a marker or chosen with ``--faults``:

- ``zero_usage``: a 200 whose usage is all zeros (a gateway filling in what the upstream left out);
- ``error_audio``: a 200 ``audio/mpeg`` whose body is a JSON error;
- ``nodb400``: LiteLLM's answer to a wrong key, ``400 {"error": {"type": "no_db_connection"}}``;
- ``plain500``: LiteLLM's answer to a missing key, ``500 text/plain``;
- ``redirect``: ``301`` to the same path on https;
- ``overload200``: new-api's overload error inside a 200;
- ``model404``: ``404 model_not_found``;
- ``overloaded529``: Anthropic's ``529 {"type": "error", "error": {"type": "overloaded_error"}}``;
- ``stream_cut``: a streamed answer that ends before its end marker (no ``[DONE]``, no
  ``message_stop``); the relay did, and billed, the work;
- ``stream_overload``: a stream broken off halfway by the route's overload error event (Claude's
  ``event: error`` ``overloaded_error``, Gemini's ``UNAVAILABLE``, new-api's error chunk before
  ``[DONE]``); billed like a cut stream.
"""

EXTRA_FAULTS: tuple[str, ...] = ("429_window",)
"""Kinds drawn only when named in ``faults``: ``429_window`` is llmock's 429, a short
``retry-after-ms`` (``--retry-after``) next to ``x-ratelimit-remaining-requests: 0`` and a
59.5 s ``x-ratelimit-reset-requests``."""

TASK_FAULTS: tuple[str, ...] = (
    "submit_timeout",
    "submit_reset",
    "submit_504",
    "task_fail",
    "task_stuck",
    "unfetchable",
    "result_timeout",
    "queue_full",
    "banned",
    "mj_queued",
    "mj_existed",
    "legacy_url",
    "luma_artifact",
    "cometapi",
    "short_video",
)
"""Faults of the async task routes (issue 14), forced by a marker or chosen with ``--faults``
(other routes ignore them): ``submit_timeout`` / ``submit_reset``: the relay records and charges
the task, the answer never arrives (held ``hang_seconds`` then dropped / dropped at once);
``submit_504``: the relay records and charges the task, and a proxy in front of it answers an
HTML 504 Gateway Timeout instead;
``task_fail``: the task ends in failure (refunded); ``task_stuck``: it never finishes, until the
relay's deadline fails it; ``unfetchable`` / ``result_timeout``: its result URLs answer 404 /
hang; ``queue_full``: MJ code 23 (a 429 for Suno and video); ``banned``: MJ code 24 (an error
envelope for Suno and video); ``mj_queued`` / ``mj_existed``: the MJ upstream answered 22 / 21,
which new-api rewrites to 1; ``legacy_url``: a video's URL in ``fail_reason`` (new-api before
2026), not ``result_url``; ``luma_artifact``: a Luma generation in the newer ``artifact`` shape;
``cometapi``: a Runway task answered in CometAPI's TaskDto envelope, unknown at first;
``short_video``: a Kling video comes out half as long as asked, its upstream deducts half the
units (``final_unit_deduction``) and the relay re-prices the task on success (``tasks_billing``)."""

MARKER_FAULTS = frozenset(ALL_FAULTS + PERMANENT_FAULTS + GATEWAY_FAULTS + EXTRA_FAULTS + TASK_FAULTS)
CHOOSABLE_FAULTS = ALL_FAULTS + GATEWAY_FAULTS + EXTRA_FAULTS + TASK_FAULTS
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

JSON = "application/json"
_MARKER = re.compile(rb"\[\[fault:([a-z0-9_]+?)(?:x(\d+))?\]\]")


def find_marker(raw: bytes) -> tuple[str, int | None] | None:
    """The first known ``[[fault:KIND]]`` / ``[[fault:KINDxN]]`` marker: (kind, N or None)."""
    for match in _MARKER.finditer(raw):
        kind = match.group(1).decode()
        if kind in MARKER_FAULTS:
            return kind, int(match.group(2)) if match.group(2) else None
    return None


# --- Canned error answers --------------------------------------------------------------------


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

HTML_504 = _HTML_502.replace(b"502 Bad Gateway", b"504 Gateway Time-out")

CANNED: dict[str, tuple[int, bytes, str]] = {
    "429": (429, error_body("当前分组上游负载已饱和，请稍后再试", "new_api_error", "rate_limit"), JSON),
    "429_window": (
        429,
        error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        JSON,
    ),
    "429_empty": (429, b"", "text/plain"),
    "500": (500, error_body("do request failed: 上游服务错误", "one_api_error", "do_request_failed"), JSON),
    "502": (502, _HTML_502, "text/html"),
    "503": (
        503,
        b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
        "text/plain",
    ),
    "error200": (200, error_body("upstream error: 上游服务异常", "upstream_error", "bad_response"), JSON),
    "400": (400, error_body("invalid request (forced by marker)", "invalid_request_error", None), JSON),
    "401": (401, error_body("无效的令牌", "one_api_error", "invalid_api_key"), JSON),
    "quota": (
        403,
        error_body("用户额度不足, 剩余额度: $0.00", "one_api_error", "insufficient_user_quota"),
        JSON,
    ),
    "404": (404, error_body("Invalid URL (forced by marker)", "invalid_request_error", "not_found"), JSON),
    "error_audio": (
        200,
        error_body("upstream error: 上游服务异常", "upstream_error", "bad_response"),
        "audio/mpeg",
    ),
    "nodb400": (
        400,
        error_body("No connected db.", "no_db_connection", "400"),
        JSON,
    ),
    "plain500": (500, b"Internal Server Error", "text/plain"),
    "overload200": (200, orjson.dumps({"error": "当前分组上游负载已饱和，请稍后再试"}), JSON),
    "model404": (
        404,
        error_body(
            "The model `m` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        JSON,
    ),
}
CANNED["overloaded529"] = (
    529,
    orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    JSON,
)
"""Faults that are a fixed answer: kind → (status, body, content type)."""


WINDOW_HEADERS = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "59.5s"}


def retry_after_headers(value: float) -> dict[str, str]:
    """Retry-After in seconds and retry-after-ms, as relays and OpenAI send them."""
    seconds = f"{value:.3f}".rstrip("0").rstrip(".")
    return {"Retry-After": seconds, "retry-after-ms": str(round(value * 1000))}


# --- Counters --------------------------------------------------------------------------------
