"""What a finished call means for its lines: attempt records and terminal results.

Pure builders: from a call (classification + raw answer) and the lines it carried, make its
``AttemptRecord`` (one per line, or one for an answered packed call) and, when the call ended
them, the lines' ``LineResult``. A packed
embedding answer is split so each line gets its own body and its share of the usage.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from jobs.models import RequestState
from jobs.records import AttemptRecord, LineResult, Usage, WorkItem
from jobs.vectors import Vectors
from workers.client import NoAnswer, RawResponse
from workers.endpoints import family_of
from workers.packing import attribute_usage, line_bodies
from workers.retry import Classification, Verdict
from workers.units import Unit

MAX_ERROR_BODY = 20_000
REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id", "request-id")
Clean = Callable[[str], str]


class _CallIds:
    """Ids for calls, unique across processes without a system call each (a uuid4 cost 10 us a
    call): a random 64-bit prefix per process, drawn again in a forked child, and a counter."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self._prefix, self._count = os.urandom(8).hex(), itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


new_call_id = _CallIds()
"""A new call's id: 32 hex digits, as a uuid4's were."""


@dataclass(frozen=True, slots=True)
class Call:
    """One finished upstream call."""

    classification: Classification
    response: RawResponse | None
    started_at: datetime
    duration_ms: int
    call_id: str = field(default_factory=new_call_id)
    route: str | None = None  # the provider and key it went to (routed calls), answered or not
    sent_at: float = 0.0  # when it left, by this process's monotonic clock (0: not known)
    request_id: str | None = field(init=False)  # the upstream request id, if the call got an answer

    def __post_init__(self) -> None:
        # Read once per call: every line of a pack of 256 records it.
        rid = None
        if self.response is not None:
            headers = self.response.headers
            rid = next((v for name in REQUEST_ID_HEADERS if (v := headers.get(name))), None)
        object.__setattr__(self, "request_id", rid)

    @property
    def status(self) -> int | None:
        """The answer's HTTP status, if the call got an answer."""
        return self.response.status if self.response is not None else None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call as it came back, before it is read: the answer (or why none came) and when it ran."""

    answer: RawResponse | NoAnswer
    call_id: str
    started_at: datetime
    duration_ms: int
    sent_at: float  # when it left, by this process's monotonic clock

    def call(
        self, classification: Classification, response: RawResponse | None, *, route: str | None = None
    ) -> Call:
        """The finished call, once its answer has been classified."""
        return Call(
            classification, response, self.started_at, self.duration_ms, self.call_id, route, self.sent_at
        )


@dataclass(frozen=True, slots=True)
class Answered:
    """One call for a unit, and the lines' results when it was answered OK and parsed."""

    call: Call
    results: list[LineResult] | None = None

    def usage(self) -> Usage | None:
        """What the whole call used (the sum of its lines), when it was answered."""
        if self.results is None:
            return None
        return call_usage(self.results)


def call_usage(results: Sequence[LineResult]) -> Usage:
    """What a whole call used: the sum of its lines' usage.

    Field by field: adding a pack's 256 usages one to the next built 256 of them (2 us a line).
    """
    us = [r.usage for r in results if r.usage is not None]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in us),
        completion_tokens=sum(u.completion_tokens for u in us),
        total_tokens=sum(u.total_tokens for u in us),
        characters=sum(u.characters for u in us),
        estimated=any(u.estimated for u in us),
        cached_tokens=sum(u.cached_tokens for u in us),
        reasoning_tokens=sum(u.reasoning_tokens for u in us),
        cache_write_tokens=sum(u.cache_write_tokens for u in us),
        cache_write_1h_tokens=sum(u.cache_write_1h_tokens for u in us),
        seconds=sum((u.seconds for u in us), Decimal(0)),
        images=sum(u.images for u in us),
        calls=sum((u.calls for u in us), Decimal(0)),
    )


def call_records(
    unit: Unit, call: Call, results: Sequence[LineResult] | None, *, owner: str, clean: Clean
) -> list[AttemptRecord]:
    """The attempt records of one call for its unit: one for a packed call that was answered
    (its lines in ``carried``, the whole call's usage), else one per line (see ``AttemptRecord``)."""
    if unit.packed and _answered(call):
        usage = call_usage(results) if results and any(r.usage is not None for r in results) else None
        record = attempt_record(unit.items[0], call, unit.attempts[0], owner=owner, clean=clean, usage=usage)
        record.carried = tuple(zip(unit.ids, unit.attempts, strict=True))
        return [record]
    usages = [r.usage for r in results] if results is not None else [None] * len(unit.items)
    lines = zip(unit.items, unit.attempts, usages, strict=True)
    return [attempt_record(item, call, n, owner=owner, clean=clean, usage=u) for item, n, u in lines]


def _answered(call: Call) -> bool:
    """Whether the call's answer came back whole: not ``batcher.usage``'s unknown kind."""
    status = call.status
    return status is not None and not (200 <= status < 300 and call.classification.error_class == "bad_body")


def attempt_record(
    item: WorkItem, call: Call, attempt_no: int, *, owner: str, clean: Clean, usage: Usage | None = None
) -> AttemptRecord:
    """The record of one line's part in one call."""
    c = call.classification
    return AttemptRecord(
        request_id=item.request_id,
        job_id=item.job_id,
        attempt_no=attempt_no,
        started_at=call.started_at,
        duration_ms=call.duration_ms,
        status_code=call.response.status if call.response else None,
        outcome=c.verdict.value,
        error_class=c.error_class,
        error_message=None if c.verdict == Verdict.OK else clean(c.message),
        sent=c.sent is not False,
        usage=usage,
        upstream_request_id=_request_id(call, clean),
        worker=owner,
        call_id=call.call_id,
        provider=route_of(call),
    )


def route_of(call: Call) -> str | None:
    """The provider and key label that took the call, when calls are routed."""
    return call.route or (call.response.route if call.response is not None else None)


def _request_id(call: Call, clean: Clean) -> str | None:
    """The upstream request id, scrubbed: relays have echoed the key in ``x-request-id``."""
    if call.call_id in _SCRUBBED:  # a pack's lines all ask: scrub once per call
        return _SCRUBBED[call.call_id]
    rid = call.request_id
    _SCRUBBED.clear()
    _SCRUBBED[call.call_id] = cleaned = None if rid is None else clean(rid)
    return cleaned


_SCRUBBED: dict[str, str | None] = {}  # the last call's scrubbed request id


def success(
    item: WorkItem, call: Call, body_json: str, usage: Usage, clean: Clean, *, vectors: Vectors | None = None
) -> LineResult:
    """A succeeded line with its answer body, usage and vectors."""
    assert call.response is not None  # an OK classification always has an answer
    return LineResult(
        request_id=item.request_id,
        job_id=item.job_id,
        state=RequestState.SUCCEEDED,
        status_code=call.response.status,
        response_body=body_json,
        upstream_request_id=_request_id(call, clean),
        usage=usage,
        latency_ms=call.duration_ms,
        vectors=vectors,
        cache_key=item.cache_key,
        provider=route_of(call),
    )


def json_results(unit: Unit, call: Call, clean: Clean) -> list[LineResult]:
    """Results of an OK JSON answer; a packed answer is split per line (ValueError if it cannot be)."""
    response = call.response
    assert response is not None
    parsed = family_of(unit.endpoint).parse(unit.requests[0], response.content)
    if not unit.packed:
        return [success(unit.items[0], call, parsed.body_json, parsed.usage, clean, vectors=parsed.vectors)]
    spans = unit.spans()
    answer = parsed.body if parsed.body is not None else orjson.loads(parsed.body_json)
    usages = attribute_usage(answer, [item.est_tokens for item in unit.items])
    bodies = line_bodies(answer, spans, usages)
    part = parsed.vectors.part if parsed.vectors is not None else None
    # ``success`` for each line, with what the call's lines share read once, not 256 times.
    rid, provider = _request_id(call, clean), route_of(call)
    return [
        LineResult(
            item.request_id,
            item.job_id,
            RequestState.SUCCEEDED,
            response.status,
            body,
            upstream_request_id=rid,
            usage=usage,
            latency_ms=call.duration_ms,
            vectors=part(*span) if part is not None else None,
            cache_key=item.cache_key,
            provider=provider,
        )
        for item, body, usage, span in zip(unit.items, bodies, usages, spans, strict=True)
    ]


def speech_result(
    item: WorkItem, request: dict[str, Any], call: Call, path: Path, clean: Clean
) -> LineResult:
    """A succeeded line whose answer (a speech line's audio) was saved at ``path``."""
    assert call.response is not None
    family = family_of(item.endpoint)
    return LineResult(
        request_id=item.request_id,
        job_id=item.job_id,
        state=RequestState.SUCCEEDED,
        status_code=call.response.status,
        audio_path=str(path),
        audio_bytes=len(call.response.content),
        audio_format=family.file_format(request),
        upstream_request_id=_request_id(call, clean),
        usage=family.file_usage(request),
        latency_ms=call.duration_ms,
        provider=route_of(call),
    )


def failure(item: WorkItem, call: Call, clean: Clean) -> LineResult:
    """A failed line with the error and the last answer's body, if it was JSON."""
    c = call.classification
    return LineResult(
        request_id=item.request_id,
        job_id=item.job_id,
        state=RequestState.FAILED,
        status_code=call.response.status if call.response else None,
        response_body=_error_body(call.response, clean),
        upstream_request_id=_request_id(call, clean),
        error_code=clean(c.code or c.error_class),
        error_message=clean(c.message),
        provider=route_of(call),
    )


def out_of_patience(item: WorkItem, call: Call, waited: float, clean: Clean) -> LineResult:
    """A line the relay kept throttling (429, overload) for longer than ``--max-wait``."""
    c = call.classification
    message = (
        f"still {c.error_class.replace('_', '-')} after waiting {waited:.0f} s (--max-wait); "
        f"the relay's last answer: {c.message}. Raise --max-wait or lower the pace (--rpm)"
    )
    return replace(failure(item, call, clean), error_message=clean(message))


def capped(item: WorkItem, attempts: int) -> LineResult:
    """A line that used up its attempts (on earlier claims)."""
    return LineResult(
        request_id=item.request_id,
        job_id=item.job_id,
        state=RequestState.FAILED,
        error_code="max_attempts",
        error_message=f"gave up after {attempts} attempts (--max-attempts)",
    )


def _error_body(response: RawResponse | None, clean: Clean) -> str | None:
    if response is None or not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return clean(orjson.dumps(body).decode()[:MAX_ERROR_BODY])


def audio_name(item: WorkItem, request: dict[str, Any]) -> str:
    """The file name of a speech line's audio in its job's folder: one file per line id."""
    return f"{item.request_id}.{family_of(item.endpoint).file_format(request)}"


def is_file_answer(unit: Unit) -> bool:
    """Answers that are files (speech audio), saved beside the store instead of in it."""
    return family_of(unit.endpoint).binary_answer


def used_tokens(unit: Unit, answered: Answered) -> int | None:
    """Tokens to settle the limiter with; None when the call was not answered."""
    if answered.results is None:
        return None
    if is_file_answer(unit):
        return unit.est_tokens
    return sum((r.usage.total_tokens if r.usage else 0) for r in answered.results)


def status_of(call: Call) -> int | None:
    """The HTTP status of the call's answer, if it got one."""
    return call.response.status if call.response is not None else None
