"""The stand-in relay's enforcement: per-key request and token limits, and a cap on calls in flight.

``Enforcer.admit`` decides at a call's arrival (before any upstream latency, as real relays do)
whether it goes on, and if not, the refusal a real relay would send:

- a **429** past a request or token limit (``windows``: fixed, sliding log, token bucket), each
  API key counted on its own, with the wait told the way ``hints`` says: ``retry-after``
  (``Retry-After`` + ``retry-after-ms``, as OpenAI), ``litellm`` (LiteLLM's renamed
  ``llm_provider-retry-after(-ms)`` and "Please try again in 558ms" in the message), ``message``
  (only the message) or ``none`` (no hint at all);
- a **503** past ``max_concurrent`` calls in flight, with new-api's overload body
  (``当前分组上游负载已饱和，请稍后再试``, type ``new_api_error``, code ``upstream_overloaded``)
  and ``Retry-After`` when ``overload_retry_after`` is set.

The enforcer also counts what it admitted by its own clock, the one its windows count by:
requests admitted per second (``admitted_per_second``) and the most requests any one window held
(``busiest_window``, for a sliding log the strict "any ``window`` seconds"), and the calls it
had in flight on average from the first arrival to the last answer (``mean_in_flight``, what a
cap on concurrent calls is used to, whatever this machine's load does to the latency). These are what the
benchmarks read "% of the limit" and "never exceeded" from, not the answers' arrival seconds.

With ``ratelimit_headers`` every answer of a limited key carries OpenAI's ``x-ratelimit-limit-*``,
``-remaining-*`` and ``-reset-*`` (reset as OpenAI writes it: ``20ms``, ``1.5s``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from batcher.devrelay.faults import JSON, error_body
from batcher.devrelay.windows import LimitMode, Window, new_window

OVERLOAD_MESSAGE = "当前分组上游负载已饱和，请稍后再试"


class Hints(StrEnum):
    """How a 429 tells the client when to come back."""

    RETRY_AFTER = "retry-after"
    LITELLM = "litellm"
    MESSAGE = "message"
    NONE = "none"


@dataclass(frozen=True)
class LimitRules:
    """What the relay enforces; zero means no such limit."""

    requests: int = 0
    tokens: int = 0
    window: float = 1.0
    mode: LimitMode = LimitMode.SLIDING
    hints: Hints = Hints.RETRY_AFTER
    ratelimit_headers: bool = False
    max_concurrent: int = 0
    overload_retry_after: float | None = 1.0

    @property
    def limited(self) -> bool:
        """Whether any request or token limit applies."""
        return self.requests > 0 or self.tokens > 0


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the call: status, body, headers, and which counter it goes to."""

    status: int
    body: bytes
    headers: dict[str, str]
    kind: str  # "rate_limited" or "overloaded"
    content_type: str = JSON


def format_reset(seconds: float) -> str:
    """A wait as OpenAI writes it in headers and messages: ``558ms`` below a second, else ``1.5s``."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _retry_headers(seconds: float, *, prefix: str = "") -> dict[str, str]:
    value = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return {f"{prefix}retry-after": value, f"{prefix}retry-after-ms": str(max(1, round(seconds * 1000)))}


@dataclass
class _Key:
    requests: Window | None
    tokens: Window | None


@dataclass
class Enforcer:
    """Per-key windows and the in-flight count; see the module docstring."""

    rules: LimitRules
    in_flight: int = 0
    admitted_per_second: Counter[int] = field(default_factory=Counter)
    busiest_window: float = 0.0
    _busy: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # [first, last, call-seconds]
    _keys: dict[str, _Key] = field(default_factory=dict)

    def _key(self, key: str) -> _Key:
        state = self._keys.get(key)
        if state is None:
            r = self.rules
            state = _Key(
                new_window(r.mode, r.requests, r.window) if r.requests else None,
                new_window(r.mode, r.tokens, r.window) if r.tokens else None,
            )
            self._keys[key] = state
        return state

    def admit(self, key: str, tokens: int, now: float) -> Refusal | None:
        """Let the call in (and count it in flight until ``leave``), or the refusal to send."""
        r = self.rules
        if r.max_concurrent and self.in_flight >= r.max_concurrent:
            return self._overloaded()
        if r.limited:
            refusal = self._take(key, tokens, now)
            if refusal is not None:
                return refusal
            self._count(key, now)
        self._flight(now, +1)
        return None

    def _flight(self, now: float, step: int) -> None:
        """Count the call-seconds spent in flight, for the mean concurrency the relay reports."""
        first, last, area = self._busy
        self._busy = [first or now, now, area + self.in_flight * (now - last if last else 0.0)]
        self.in_flight += step

    def _count(self, key: str, now: float) -> None:
        self.admitted_per_second[int(now)] += 1
        window = self._key(key).requests
        if window is not None:
            self.busiest_window = max(self.busiest_window, window.counted())

    def counts(self) -> dict[str, Any]:
        """What the limits admitted by their own clock (see the module docstring)."""
        first, last, area = self._busy
        return {
            "mean_in_flight": area / (last - first) if last > first else 0.0,
            "admitted_per_second": dict(self.admitted_per_second),
            "busiest_window": self.busiest_window,
            "limit": {
                "requests": self.rules.requests,
                "window": self.rules.window,
                "mode": str(self.rules.mode),
            },
        }

    def leave(self, now: float) -> None:
        """A call admitted by ``admit`` was answered."""
        self._flight(now, -1)

    def _take(self, key: str, tokens: int, now: float) -> Refusal | None:
        state = self._key(key)
        # Check both before taking either, so a call refused for tokens uses no request.
        for kind, window, units in (("requests", state.requests, 1), ("tokens", state.tokens, tokens)):
            if window is None:
                continue
            wait = window.take(now, units)
            if wait is not None:
                if kind == "tokens" and state.requests is not None:
                    state.requests.give_back(1)
                return self._limited(kind, window, units, wait, now)
        return None

    def _limited(self, kind: str, window: Window, units: int, wait: float, now: float) -> Refusal:
        r = self.rules
        limit = r.requests if kind == "requests" else r.tokens
        used = limit - window.remaining(now)
        message = (
            f"Rate limit reached for {kind} per {r.window:g}s: Limit {limit}, Used {used}, Requested {units}."
        )
        headers: dict[str, str] = {}
        if r.hints in (Hints.LITELLM, Hints.MESSAGE):
            message += f" Please try again in {format_reset(wait)}."
        if r.hints is Hints.RETRY_AFTER:
            headers = _retry_headers(wait)
        elif r.hints is Hints.LITELLM:
            headers = _retry_headers(wait, prefix="llm_provider-")
        body = error_body(message, kind, "rate_limit_exceeded")
        return Refusal(429, body, headers, "rate_limited")

    def _overloaded(self) -> Refusal:
        after = self.rules.overload_retry_after
        headers = _retry_headers(after) if after is not None else {}
        body = error_body(OVERLOAD_MESSAGE, "new_api_error", "upstream_overloaded")
        return Refusal(503, body, headers, "overloaded")

    def headers(self, key: str, now: float) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for this key, if the relay sends them."""
        if not (self.rules.ratelimit_headers and self.rules.limited):
            return {}
        state, out = self._key(key), {}
        for kind, window, limit in (
            ("requests", state.requests, self.rules.requests),
            ("tokens", state.tokens, self.rules.tokens),
        ):
            if window is not None:
                out[f"x-ratelimit-limit-{kind}"] = str(limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(window.remaining(now))
                out[f"x-ratelimit-reset-{kind}"] = format_reset(window.reset_in(now))
        return out
