"""The retry policy, as pure functions: what an answer means for its line, and when to try again.

Relays answer inconsistently: OpenAI-style errors, ``one_api_error`` / ``new_api_error``,
upstream types, Chinese messages, a 429 with an empty body, errors inside an HTTP 200. So a
call is classified on status *and* body, and the relay's own message is kept:

- OK: a 2xx JSON object without ``"error"`` (or, for speech, a 2xx that is not JSON);
- RETRY: 408, 409, 429, 5xx, timeouts, connection errors, truncated or non-JSON 2xx bodies,
  and a 2xx carrying ``{"error": ...}`` (classed ``rate_limited`` when it says overload or rate);
- PERMANENT (this line fails, the job goes on): 400, 404, 413, 422 and other 4xx;
- FATAL (stop the job, calling on would burn every line): 401/403, and quota errors whatever
  their status (OpenAI sends ``insufficient_quota`` with 429) unless the message is clearly
  about request rate (Gemini's "Resource has been exhausted (e.g. check quota)" is a rate limit).

Delays follow openai-python: ``retry-after-ms``, then ``Retry-After`` (seconds or HTTP date),
else exponential backoff from 0.5 s capped at 30 s, with up to 25 % jitter taken off.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
import httpx
import orjson

MAX_MESSAGE = 500
MAX_RETRY_AFTER_S = 3600.0  # a relay asking for more than an hour is broken, not throttling

_QUOTA_CODES = {"insufficient_quota", "insufficient_user_quota", "quota_exceeded", "billing_not_active"}
_QUOTA_WORDS = re.compile(r"quota|余额|额度不足|insufficient balance|credit", re.IGNORECASE)
_RATE_WORDS = re.compile(
    r"rate.?limit|too many requests|per minute|\bRPM\b|\bTPM\b|请求过于频繁|负载已饱和|频率"
    r"|resource has been exhausted",
    re.IGNORECASE,
)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_STATUS_CLASSES = {
    400: "bad_request",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
}


class Verdict(StrEnum):
    """What a call means for its line."""

    OK = "ok"
    RETRY = "retry"
    PERMANENT = "permanent"
    FATAL = "fatal"


@dataclass(frozen=True)
class Classification:
    """A call's verdict with a short stable class, the relay's message and code, and Retry-After."""

    verdict: Verdict
    error_class: str
    message: str
    code: str | None = None
    retry_after: float | None = None
    sent: bool | None = None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _as_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """The (message, type, code) of an error body in any of the shapes relays send."""
    stripped = body.strip()
    if not stripped:
        return None, None, None
    try:
        data = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return _plain_message(stripped), None, None
    if not isinstance(data, dict):
        return _cut(stripped.decode("utf-8", "replace")), None, None
    return _json_error(data)


def _plain_message(body: bytes) -> str:
    title = _TITLE.search(body)
    raw = title.group(1) if title else body
    return _cut(raw.decode("utf-8", "replace"))


def _json_error(data: dict[str, object]) -> tuple[str | None, str | None, str | None]:
    error = data.get("error")
    if isinstance(error, dict):
        message = _as_text(error.get("message"))
        return (_cut(message) if message else None), _as_text(error.get("type")), _as_text(error.get("code"))
    if isinstance(error, str) and error:
        return _cut(error), None, _as_text(data.get("code"))
    for key in ("message", "detail", "msg"):
        text = _as_text(data.get(key))
        if text:
            return _cut(text), _as_text(data.get("type")), _as_text(data.get("code"))
    return None, None, None


def _is_quota(status: int, message: str | None, kind: str | None, code: str | None) -> bool:
    if status == 402 or {kind, code} & _QUOTA_CODES:
        return True
    text = message or ""
    if not _QUOTA_WORDS.search(text):
        return False
    return not (status == 429 and _RATE_WORDS.search(text))


def _describe(status: int, message: str | None, kind: str | None, code: str | None) -> str:
    label = code or kind
    head = f"{status} {label}" if label else str(status)
    return f"{head}: {message}" if message else f"{head} (empty body)" if status else head


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, binary_ok: bool = False
) -> Classification:
    """What an HTTP answer means for its line (rules in the module docstring)."""
    retry_after = parse_retry_after(headers, now=now)
    if 200 <= status < 300:
        return _classify_2xx(status, headers, body, binary_ok=binary_ok, retry_after=retry_after)
    message, kind, code = parse_error_body(body)
    text = _describe(status, message, kind, code)
    if _is_quota(status, message, kind, code):
        return Classification(Verdict.FATAL, "quota", text, code or kind, retry_after)
    if status in (401, 403):
        return Classification(Verdict.FATAL, "auth", text, code or kind, retry_after)
    if status in (408, 409, 429) or status >= 500:
        error_class = _STATUS_CLASSES.get(status, "server_error")
        return Classification(Verdict.RETRY, error_class, text, code or kind, retry_after)
    return Classification(Verdict.PERMANENT, _STATUS_CLASSES.get(status, "client_error"), text, code or kind)


def _is_json(headers: Mapping[str, str]) -> bool:
    content_type = _header(headers, "content-type") or ""
    return "json" in content_type.lower()


def _classify_2xx(
    status: int, headers: Mapping[str, str], body: bytes, *, binary_ok: bool, retry_after: float | None
) -> Classification:
    if binary_ok and not _is_json(headers):
        if not body:
            return Classification(Verdict.RETRY, "bad_body", f"{status} with an empty audio body")
        return Classification(Verdict.OK, "ok", "")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Classification(
            Verdict.RETRY, "bad_body", f"{status} with a truncated or non-JSON body ({len(body)} bytes)"
        )
    if not isinstance(data, dict):
        return Classification(
            Verdict.RETRY, "bad_body", f"{status} with a JSON {type(data).__name__}, not an object"
        )
    if "error" not in data or data["error"] in (None, "", {}):
        return Classification(Verdict.OK, "ok", "")
    return _error_in_200(status, data, retry_after)


def _error_in_200(status: int, data: dict[str, object], retry_after: float | None) -> Classification:
    message, kind, code = _json_error(data)
    text = _describe(status, message, kind, code) + " (an error inside HTTP 200)"
    if _is_quota(0, message, kind, code):
        return Classification(Verdict.FATAL, "quota", text, code or kind)
    if kind == "authentication_error" or code in ("invalid_api_key", "invalid_token"):
        return Classification(Verdict.FATAL, "auth", text, code or kind)
    if _RATE_WORDS.search(message or "") or code in ("rate_limit", "rate_limit_exceeded"):
        # new-api answers "当前分组上游负载已饱和" inside a 200: the relay saying "later", like a 429.
        return Classification(Verdict.RETRY, "rate_limited", text, code or kind, retry_after)
    return Classification(Verdict.RETRY, "error_in_200", text, code or kind, retry_after)


def classify_exception(exc: BaseException) -> Classification:
    """What a transport failure means: always retryable; ``sent`` says if the relay may have billed it."""
    if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
        # httpx-aiohttp maps a refused connection to ConnectTimeout; the request never left.
        detail = str(exc.__cause__) or type(exc.__cause__).__name__
        return Classification(Verdict.RETRY, "connection", _cut(f"cannot connect: {detail}"), sent=False)
    if isinstance(exc, httpx.TimeoutException):
        sent = not isinstance(exc, httpx.PoolTimeout)
        return Classification(Verdict.RETRY, "timeout", f"timed out ({type(exc).__name__})", sent=sent)
    if isinstance(exc, httpx.TransportError):
        # A refused connection never reached the relay; anything later may have run upstream.
        sent = not isinstance(exc, httpx.ConnectError)
        detail = str(exc) or type(exc).__name__
        return Classification(Verdict.RETRY, "connection", _cut(f"connection failed: {detail}"), sent=sent)
    raise TypeError(f"not a transport error: {exc!r}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return _sane(seconds / 1000)
    value = _header(headers, "retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        seconds = _date_delay(value, now)
    return _sane(seconds) if seconds is not None else None


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _date_delay(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now


def _sane(seconds: float) -> float | None:
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else None


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, jitter: float) -> float:
    """Exponential backoff for the ``attempt``-th try (1-based) with up to 25 % taken off by ``jitter``."""
    delay: float = min(base * 2.0 ** max(attempt - 1, 0), cap)
    return delay * (1 - 0.25 * jitter)


def next_delay(c: Classification, attempt: int, *, jitter: float) -> float:
    """How long to wait before the next try: the relay's Retry-After when it gave one."""
    return c.retry_after if c.retry_after is not None else backoff_delay(attempt, jitter=jitter)


def should_retry(c: Classification, attempt: int, max_attempts: int) -> bool:
    """Whether a line gets another try after this answer."""
    return c.verdict == Verdict.RETRY and attempt < max_attempts
