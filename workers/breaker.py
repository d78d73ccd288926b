"""The job's circuit breaker: stop a job whose calls all fail the same way, before it burns its lines.

A dead relay, a base URL that ends in an endpoint path, a relay that redirects, a wrong key behind
a gateway that answers it with a 400 or a 500: each fails every line, one line and five attempts
at a time. The breaker watches the answers in the order they land and trips after a run of
``TRIP_CALLS`` calls, on different lines, that failed the same way:

- **connection**: nothing answers at the base URL (refused, reset);
- **redirect**: a 3xx (batcher never follows one: the key must not travel), with its Location;
- **route**: a 404 that is not about a model: the path is wrong (a doubled ``/chat/completions``);
- **same**: before any call of the run succeeded, the same status and error (a gateway's
  ``no_db_connection`` 400 for a bad key, its ``500 text/plain`` for a missing one). Overload,
  429s and timeouts never count: they are "later", not "wrong".

Any success or differing answer ends the run. A line that fails for good while a run is under way
is *held*, not failed: if the breaker trips, held lines go back to pending with the rest of the
job (stopped, with a message saying what is wrong and what to fix); if the run ends, they fail as
usual. The breaker is pure bookkeeping; the executor acts on what it says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from jobs.endpoints import Endpoint
from jobs.records import LineResult, WorkItem
from workers.blame import blames_the_call
from workers.endpoints import families
from workers.outcomes import Call
from workers.retry import Verdict
from workers.units import Unit

TRIP_CALLS = 5  # small: the first wave of calls tells; large enough that chance does not
_LATER = frozenset({"rate_limited", "overloaded", "timeout"})
_GATEWAY_FLAKES = frozenset({502, 503, 504})


class Kind(StrEnum):
    """What a run of failures says is wrong."""

    CONNECTION = "connection"
    REDIRECT = "redirect"
    ROUTE = "route"
    SAME = "same"


@dataclass(frozen=True)
class Signature:
    """How a call failed, as far as the breaker compares failures."""

    kind: Kind
    status: int | None
    error: str


_OK, _IGNORE, _OTHER = "ok", "ignore", "other"


def signature(call: Call, *, early: bool) -> Signature | str:  # noqa: PLR0911 - one rule per line
    """The call's failure signature, or ``_OK`` / ``_IGNORE`` / ``_OTHER`` (see the module doc)."""
    c = call.classification
    if c.verdict == Verdict.OK:
        return _OK
    if c.error_class == "connection":
        return Signature(Kind.CONNECTION, None, "connection")
    if c.error_class in _LATER or c.verdict == Verdict.FATAL or c.error_class == "not_implemented":
        return _IGNORE  # a 501 fails its route's lines, not the job (``workers.executor``)
    status = call.response.status if call.response is not None else None
    if status is not None and 300 <= status < 400:
        location = call.response.headers.get("location", "") if call.response is not None else ""
        return Signature(Kind.REDIRECT, status, location)
    if status == 404 and not blames_the_call(c, None):
        return Signature(Kind.ROUTE, 404, "not_found")
    refused = status is not None and status >= 400 and status not in _GATEWAY_FLAKES
    if early and (refused or c.verdict == Verdict.PERMANENT):
        return Signature(Kind.SAME, status, f"{c.error_class}:{c.code}")
    return _OTHER


@dataclass
class Breaker:
    """Watches a run's answers; ``observe`` returns a message when the job should stop."""

    base_url: str
    trip_calls: int = TRIP_CALLS
    _run: Signature | None = None
    _lines: set[int] = field(default_factory=set)
    _calls: int = 0
    _held: list[tuple[LineResult, WorkItem]] = field(default_factory=list)
    _done: list[LineResult] = field(default_factory=list)
    _early: bool = True
    tripped: str | None = None

    def observe(self, call: Call, request_ids: list[int], endpoint: Endpoint) -> str | None:
        """Take in one finished call; the stop message when this call trips the breaker."""
        if self.tripped:
            return None
        sig = signature(call, early=self._early)
        if sig == _IGNORE:
            return None
        if not isinstance(sig, Signature):
            self._early = self._early and sig != _OK
            self._end_run()
            return None
        if sig != self._run:
            self._end_run()
            self._run = sig
        if set(request_ids) - self._lines:
            self._calls += 1
            self._lines.update(request_ids)
        if self._calls >= self.trip_calls:
            self.tripped = self._message(sig, call, endpoint)
        return self.tripped

    def hold(self, result: LineResult, item: WorkItem) -> bool:
        """Keep a failed line's result while a run is under way (True), or let it be written."""
        if self._run is None or self.tripped:
            return False
        self._held.append((result, item))
        return True

    def drain(self) -> list[LineResult]:
        """Held results whose run ended without a trip: fail them now."""
        done, self._done = self._done, []
        return done

    def held_items(self) -> list[WorkItem]:
        """Lines held when the breaker tripped: they go back to pending."""
        return [item for _, item in self._held]

    def close(self) -> list[LineResult]:
        """At the end of the run: every held result, to be written as it is (none after a trip)."""
        if self.tripped:
            return []
        self._end_run()
        return self.drain()

    def _end_run(self) -> None:
        self._done.extend(result for result, _ in self._held)
        self._held, self._run, self._lines, self._calls = [], None, set(), 0

    def _message(self, sig: Signature, call: Call, endpoint: Endpoint) -> str:
        url = endpoint.url_under(self.base_url)
        n = self._calls
        fix = "then `batcher run-job JOB` (workers: `batcher resume JOB`); the lines are still pending"
        if sig.kind == Kind.CONNECTION:
            return (
                f"cannot reach the relay at {self.base_url}: {n} calls in a row on different lines "
                f"failed ({call.classification.message}); start the relay or fix OPENAI_BASE_URL, {fix}"
            )
        if sig.kind == Kind.REDIRECT:
            return f"{self._redirect(sig, url)}; {fix}"
        if sig.kind == Kind.ROUTE:
            return f"{self._route(url, n)}; {fix}"
        return (
            f"the first {n} calls, on different lines, all failed the same way "
            f"({call.classification.message}): that is about the key, the model or the relay, not "
            f"the lines; fix it, {fix}"
        )

    def _redirect(self, sig: Signature, url: str) -> str:
        target = sig.error or "(no Location header)"
        text = (
            f"the relay answered {sig.status} to {url}, redirecting to {target}; batcher never follows "
            "redirects (the key must not go elsewhere): set OPENAI_BASE_URL to the address it names"
        )
        if urlsplit(self.base_url).scheme == "http" and target.startswith("https://"):
            https = "https://" + self.base_url.removeprefix("http://")
            text += f" (it wants https: OPENAI_BASE_URL={https})"
        return text

    def _route(self, url: str, n: int) -> str:
        text = f"the relay answered 404 Not Found for {url} on {n} lines in a row: that route does not exist"
        path = urlsplit(self.base_url).path.rstrip("/")
        routes = (Endpoint(p).relative_path for f in families() for p in f.paths)
        doubled = [r for r in routes if path.endswith("/" + r)]
        if doubled:
            base = self.base_url.rstrip("/").removesuffix("/" + doubled[0])
            text += (
                f"; OPENAI_BASE_URL ends in /{doubled[0]}, so the path is doubled "
                f"({urlsplit(url).path}): set it to {base}"
            )
        else:
            text += "; check that OPENAI_BASE_URL ends in the API version, e.g. https://relay.example.com/v1"
        return text


class JobGuard:
    """The breaker wired to an executor: it stops the job, gives lines back, fails held lines.

    It also stops the job on a FATAL answer (a refused key, no quota), the other way a job ends
    at once instead of line by line.
    """

    def __init__(
        self,
        breaker: Breaker,
        *,
        stop: Callable[[str], Awaitable[None]],
        release: Callable[[Sequence[WorkItem]], Awaitable[None]],
        finish: Callable[[LineResult], None],
    ) -> None:
        self.breaker = breaker
        self._stop, self._release, self._finish = stop, release, finish

    def succeeded(self, unit: Unit, call: Call) -> None:
        """A call answered: any run of failures is over."""
        self.breaker.observe(call, unit.ids, unit.endpoint)
        self._finish_held()

    async def failed(self, unit: Unit, call: Call) -> bool:
        """A call failed; True when the breaker gave the unit's lines back (the job stopped)."""
        if self.breaker.tripped:  # in flight when it tripped: the lines go back with the rest
            await self._release(unit.items)
            return True
        tripped = self.breaker.observe(call, unit.ids, unit.endpoint)
        if tripped:
            await self._stop(tripped)
            await self._release([*unit.items, *self.breaker.held_items()])
            return True
        self._finish_held()
        c = call.classification
        if c.verdict != Verdict.FATAL:
            return False
        # A bad key or no quota: calling on would burn every line.
        await self._stop(f"the API refused the job ({c.error_class}): {c.message}")
        await self._release(unit.items)
        return True

    def fail(self, result: LineResult, item: WorkItem) -> None:
        """A line failed for good; held back while a run of failures lasts."""
        if not self.breaker.hold(result, item):
            self._finish(result)

    def close(self) -> None:
        """The run is over: held lines fail as they are (none are held after a trip)."""
        for result in self.breaker.close():
            self._finish(result)

    def _finish_held(self) -> None:
        for result in self.breaker.drain():
            self._finish(result)
