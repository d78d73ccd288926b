"""The retry policy, as pure functions: what an answer means for its line, and when to try again.

Relays answer inconsistently: OpenAI-style errors, Anthropic's ``{"type": "error", "error":
{"type", "message"}}`` and Google's ``{"error": {"code", "message", "status"}}`` on the native
routes, ``one_api_error`` / ``new_api_error``,
upstream types, Chinese messages, a 429 with an empty body, errors inside an HTTP 200. So a
call is classified on status *and* body, and the relay's own message is kept:

- OK: a 2xx JSON object without ``"error"`` (or, for speech, a 2xx that is not JSON);
- RETRY: 408, 409, 429, 5xx but 501, timeouts, connection errors, truncated or non-JSON 2xx bodies,
  and a 2xx carrying ``{"error": ...}`` (classed ``rate_limited`` when it says overload or rate);
- PERMANENT (this line fails, the job goes on): 3xx (never followed: the message names the
  Location), 400, 404, 413, 422 and other 4xx, and 501 (new-api's "API not implemented" for
  ``/v1/images/variations``: no retry makes a route exist; the executor fails the job's other
  lines of that route with it, without calling them);
- FATAL (stop the job, calling on would burn every line): 401/403 (and Anthropic's
  ``authentication_error`` / ``permission_error`` with any status), and quota errors whatever
  their status (OpenAI sends ``insufficient_quota`` with 429) unless the message is clearly
  about request rate (Gemini's "Resource has been exhausted (e.g. check quota)" is a rate limit).

A RETRY may also be a *throttle*: the relay saying "later", not a fault of the line. Those do
not consume ``--max-attempts`` (a line fails for them only past ``--max-wait``):

- ``Throttle.RATE``: a 429 that is not about quota (any code, an empty body, new-api's
  rewritten "当前分组上游负载已饱和"), or an error inside HTTP 200 with a rate-limit code or words;
  it lowers the request pace; Anthropic's ``rate_limit_error`` with any status too;
- ``Throttle.OVERLOAD``: new-api / one-api's overload answers (code ``upstream_overloaded``,
  "负载已饱和", "overloaded") with any other status or inside HTTP 200, and Anthropic's 529 /
  ``overloaded_error``; it lowers the concurrency.
  A plain 503 (an nginx or Envoy page) stays an ordinary fault.

Delays follow openai-python: ``retry-after-ms``, then ``Retry-After`` (seconds or HTTP date);
then the spellings of gateways that rename them (LiteLLM's ``llm_provider-retry-after-ms`` /
``llm_provider-retry-after``) and "Please try again in 558ms" in the error message (OpenAI and
LiteLLM write it); else exponential backoff from 0.5 s capped at 30 s, up to 25 % jitter off.
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
from multidict import CIMultiDictProxy

MAX_MESSAGE = 500
MAX_RETRY_AFTER_S = 3600.0  # a relay asking for more than an hour is broken, not throttling

_QUOTA_CODES = {"insufficient_quota", "insufficient_user_quota", "quota_exceeded", "billing_not_active"}
_QUOTA_WORDS = re.compile(r"quota|余额|额度不足|insufficient balance|credit", re.IGNORECASE)
_RATE_WORDS = re.compile(
    r"rate.?limit|too many requests|per minute|\bRPM\b|\bTPM\b|请求过于频繁|负载已饱和|频率"
    r"|resource has been exhausted",
    re.IGNORECASE,
)
_OVERLOAD_WORDS = re.compile(r"负载已饱和|overloaded|overload", re.IGNORECASE)
_OVERLOAD_CODES = {"upstream_overloaded", "server_overloaded", "overloaded_error", "overloaded"}
_RATE_CODES = {"rate_limit_exceeded", "rate_limit", "rate_limit_error", "too_many_requests"}
_AUTH_KINDS = {"authentication_error", "permission_error"}  # Anthropic's envelope, whatever the status
_ANTHROPIC_OVERLOADED = 529  # Anthropic's "Overloaded" status
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?(?:ms|s|m|h)(?:\d+(?:\.\d+)?(?:ms|s))*)", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_STATUS_CLASSES = {
    400: "bad_request",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
    501: "not_implemented",
}


NOT_IMPLEMENTED = 501


class Throttle(StrEnum):
    """A relay saying "later": which pace it asks to lower."""

    RATE = "rate"  # requests per unit of time
    OVERLOAD = "overload"  # calls in flight


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
    throttle: Throttle | None = None

    @property
    def counts_attempt(self) -> bool:
        """Whether the call uses one of the line's ``--max-attempts`` (a throttle does not)."""
        return self.throttle is None


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
        code = error.get("code")
        if isinstance(code, int) and isinstance(error.get("status"), str):
            code = error["status"]  # Google's envelope: the HTTP status again, then its name
        return (_cut(message) if message else None), _as_text(error.get("type")), _as_text(code)
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
    """``503 server_error: overloaded``: the status once, even when the relay repeats it."""
    label = code or kind
    if label == str(status):
        label = None
    repeats = bool(message) and re.match(rf"\s*{status}\b", message or "") is not None
    if repeats and label is None:
        return str(message).strip()  # "502 Bad Gateway", "404: Not Found": already says it
    if repeats:
        message = re.sub(rf"^\s*{status}\b[\s:,-]*", "", str(message)) or message
    head = f"{status} {label}" if label else str(status)
    return f"{head}: {message}" if message else f"{head} (empty body)" if status else head


def classify_response(  # noqa: PLR0911 - one return per rule of the module docstring
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, binary_ok: bool = False
) -> Classification:
    """What an HTTP answer means for its line (rules in the module docstring)."""
    if 200 <= status < 400:
        if status >= 300:
            return _redirect(status, headers)
        return _classify_2xx(status, headers, body, binary_ok=binary_ok, now=now)
    retry_after = parse_retry_after(headers, now=now)
    message, kind, code = parse_error_body(body)
    text = _describe(status, message, kind, code)
    if retry_after is None:
        retry_after = try_again_in(message)
    if _is_quota(status, message, kind, code):
        return Classification(Verdict.FATAL, "quota", text, code or kind, retry_after)
    if status in (401, 403) or kind in _AUTH_KINDS:
        return Classification(Verdict.FATAL, "auth", text, code or kind, retry_after)
    throttle = _throttle_of(status, message, kind, code)
    if throttle is not None:
        error_class = "rate_limited" if throttle is Throttle.RATE else "overloaded"
        return Classification(Verdict.RETRY, error_class, text, code or kind, retry_after, throttle=throttle)
    if status in (408, 409) or (status >= 500 and status != NOT_IMPLEMENTED):
        error_class = _STATUS_CLASSES.get(status, "server_error")
        return Classification(Verdict.RETRY, error_class, text, code or kind, retry_after)
    return Classification(Verdict.PERMANENT, _STATUS_CLASSES.get(status, "client_error"), text, code or kind)


def _throttle_of(status: int, message: str | None, kind: str | None, code: str | None) -> Throttle | None:
    """A 429 asks for a lower rate; an overload answer past 5xx for fewer calls in flight."""
    if status == 429 or kind == "rate_limit_error":
        return Throttle.RATE
    if status == _ANTHROPIC_OVERLOADED or kind == "overloaded_error":
        return Throttle.OVERLOAD
    if status >= 500 and is_overload(message, kind, code):
        return Throttle.OVERLOAD
    return None


def is_overload(message: str | None, kind: str | None, code: str | None) -> bool:
    return bool({kind, code} & _OVERLOAD_CODES or (message and _OVERLOAD_WORDS.search(message)))


def is_rate(message: str | None, kind: str | None, code: str | None) -> bool:
    return bool({kind, code} & _RATE_CODES or (message and _RATE_WORDS.search(message)))


def _redirect(status: int, headers: Mapping[str, str]) -> Classification:
    """A 3xx is never followed (the key must not travel); the line fails saying where it points."""
    location = _header(headers, "location") or "nowhere (no Location header)"
    text = (
        f"{status} redirect to {location}: batcher never follows redirects; "
        "set OPENAI_BASE_URL to the address it names"
    )
    return Classification(Verdict.PERMANENT, "redirect", text)


def _is_json(headers: Mapping[str, str]) -> bool:
    content_type = _header(headers, "content-type") or ""
    return "json" in content_type.lower()


def _classify_2xx(
    status: int, headers: Mapping[str, str], body: bytes, *, binary_ok: bool, now: float
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
    return _error_in_200(status, data, parse_retry_after(headers, now=now))  # read only for an error


def _error_in_200(status: int, data: dict[str, object], retry_after: float | None) -> Classification:
    message, kind, code = _json_error(data)
    text = _describe(status, message, kind, code) + " (an error inside HTTP 200)"
    if _is_quota(0, message, kind, code):
        return Classification(Verdict.FATAL, "quota", text, code or kind)
    if kind == "authentication_error" or code in ("invalid_api_key", "invalid_token"):
        return Classification(Verdict.FATAL, "auth", text, code or kind)
    retry_after = retry_after if retry_after is not None else try_again_in(message)
    if {kind, code} & _OVERLOAD_CODES:
        return Classification(
            Verdict.RETRY, "overloaded", text, code or kind, retry_after, throttle=Throttle.OVERLOAD
        )
    if is_rate(message, kind, code):
        # new-api answers "当前分组上游负载已饱和" inside a 200: the relay saying "later", like a 429.
        return Classification(
            Verdict.RETRY, "rate_limited", text, code or kind, retry_after, throttle=Throttle.RATE
        )
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
    if value is not None or isinstance(headers, (httpx.Headers, CIMultiDictProxy)):  # both ignore case
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


RETRY_AFTER_HEADERS = ("", "llm_provider-")
"""Prefixes of the Retry-After headers read, in order: the standard names, then LiteLLM's."""


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), or
    the same headers with LiteLLM's ``llm_provider-`` prefix."""
    for prefix in RETRY_AFTER_HEADERS:
        millis = _header(headers, prefix + "retry-after-ms")
        if millis is not None:
            seconds = _number(millis)
            if seconds is not None:
                return _sane(seconds / 1000)
        value = _header(headers, prefix + "retry-after")
        if value is not None:
            seconds = _number(value)
            if seconds is None:
                seconds = _date_delay(value, now)
            if seconds is not None:
                return _sane(seconds)
    return None


def try_again_in(message: str | None) -> float | None:
    """The wait an error message names: "Please try again in 558ms" / "in 1.5s" / "in 6m0s"."""
    match = _TRY_AGAIN.search(message or "")
    if match is None:
        return None
    return _sane(sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(match.group(1))))


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


DEFAULT_MAX_WAIT_S = 3600.0  # a relay still throttling a line after an hour will not stop soon
THROTTLE_BACKOFF_CAP_S = 5.0  # a throttled line without a named wait: the pace does the waiting


def next_delay(c: Classification, attempt: int, *, jitter: float) -> float:
    """How long to wait before the next try: the relay's Retry-After when it gave one.

    ``attempt`` counts the tries that led here; for a throttle, the throttled answers in a row.
    """
    if c.retry_after is not None:
        return c.retry_after
    cap = THROTTLE_BACKOFF_CAP_S if c.throttle is not None else 30.0
    return backoff_delay(attempt, cap=cap, jitter=jitter)


def should_retry(c: Classification, attempt: int, max_attempts: int) -> bool:
    """Whether a line gets another try after this answer (a throttle always gets one)."""
    return c.verdict == Verdict.RETRY and (c.throttle is not None or attempt < max_attempts)


def out_of_patience(waited: float, max_wait: float | None) -> bool:
    """Whether a line throttled for ``waited`` seconds has used up ``--max-wait``."""
    return max_wait is not None and waited >= max_wait
