"""Usage and cost report: every upstream call (Attempt row) counted, grouped and priced.

Cost is billed per call, so the report walks the Attempt rows, not the lines' stored results: a
call that answered with usage counts even when its line was called again. Each call is of one kind
(``attempt_kind``):

- ``succeeded``: the call that produced a succeeded line's stored result (its first ``ok`` call),
  and the further steps that result needed (``step``: a Midjourney task's modal submit);
- ``duplicate``: a later ``ok`` call of a line that had already succeeded (a lease expired and the
  line ran twice);
- ``failed``: a call on a line that finally failed;
- ``unknown``: a call sent with no answer back (timeout, dropped connection), or whose 2xx body
  was cut off: the relay may or may not have billed it. Its usage is estimated from the line's
  eventual usage if it succeeded, else from the line's pre-call estimate (``Request.est_tokens``)
  priced at the dearer of input and output: an upper bound. Reports show spend as confirmed +
  at most this unknown part;
- ``other``: any other call (not sent, a non-``ok`` answer on a line that later succeeded, lines
  still pending or cancelled).

A call the relay said its final charge of (a task's ``quota`` at success, ``Attempt.relay_quota``:
new-api re-prices a Kling task by its units) costs that charge, not its price-table charge.

Lines answered from the response cache made no call and cost nothing here; ``Report.saved`` says
what they would have cost (``batcher.cache_report``).

The calls come from the store (``q.iter_calls``: keyset pages, constant memory); only one
accumulator per group and a small cache of jobs are kept. Money is USD ``Decimal`` here;
``Report.money`` converts to the display currency.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlmodel import Session

from batcher.cache_report import CacheSaved, cache_saved
from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.models import RequestState
from jobs.options import JobOptions
from jobs.records import STEP, Usage
from workers.cost import QUOTA_PER_USD, cost_of_attempt, upper_bound_cost
from workers.endpoints import family_of
from workers.prices import PriceBook

KINDS = ("succeeded", "duplicate", "failed", "unknown", "other")
DIMENSIONS = ("job", "model", "endpoint", "family", "day", "tag", "provider", "key")
METADATA_PREFIX = "metadata."
NO_TAG = "(none)"


@dataclass
class Totals:
    """What one group of calls used and cost (USD)."""

    calls: int = 0  # upstream HTTP calls: a packed call counts once, whatever its lines
    billed_calls: int = 0  # calls that answered with usage
    tokens: dict[str, Usage] = field(default_factory=lambda: dict.fromkeys(KINDS, Usage()))
    characters: int = 0
    cost: Decimal = Decimal(0)  # confirmed: calls that answered
    unknown_calls: int = 0
    unknown_cost: Decimal = Decimal(0)  # upper bound of calls whose answer never came
    estimated_calls: int = 0  # usage estimated by batcher: the answer had none
    estimated: Usage = field(default_factory=Usage)  # the estimated part of the billed tokens
    unpriced_calls: int = 0
    unpriced_models: set[str] = field(default_factory=set)
    last_call_id: str | None = field(default=None, repr=False, compare=False)  # of the last row counted

    def new_call(self, call_id: str | None) -> bool:
        """Whether a row starts a call not counted yet (the rows of a packed call come together)."""
        new = call_id is None or call_id != self.last_call_id
        self.last_call_id = call_id
        return new

    @property
    def billed(self) -> Usage:
        """Usage of every call that answered with usage (all kinds but unknown)."""
        return sum((self.tokens[kind] for kind in KINDS if kind != "unknown"), Usage())

    def merge(self, other: Totals) -> None:
        """Add another group's totals to these."""
        self.calls += other.calls
        self.billed_calls += other.billed_calls
        for kind in KINDS:
            self.tokens[kind] += other.tokens[kind]
        self.characters += other.characters
        self.cost += other.cost
        self.unknown_calls += other.unknown_calls
        self.unknown_cost += other.unknown_cost
        self.estimated_calls += other.estimated_calls
        self.estimated += other.estimated
        self.unpriced_calls += other.unpriced_calls
        self.unpriced_models |= other.unpriced_models


@dataclass(frozen=True)
class ReportRow:
    """One group: its key (one value per dimension) and its totals."""

    key: tuple[str, ...]
    totals: Totals


@dataclass(frozen=True)
class Report:
    """Usage and cost grouped by ``by``, with a totals row; money in USD until ``money``."""

    by: tuple[str, ...]
    rows: list[ReportRow]
    total: Totals
    prices: PriceBook
    group: str | None
    saved: CacheSaved = field(default_factory=CacheSaved)  # what the response cache saved (not billed)

    def money(self, usd: Decimal) -> Decimal:
        """An amount in the display currency (exact: only a multiplication)."""
        return usd * self.prices.usd_rate


def parse_by(text: str) -> tuple[str, ...]:
    """Grouping dimensions from ``job``, ``model,day``, ``metadata.team`` ...; else ``ConfigError``."""
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dims if d not in DIMENSIONS and not d.startswith(METADATA_PREFIX)]
    if bad or not dims:
        raise ConfigError(
            f"cannot group by {', '.join(bad) or repr(text)}; use one or more of "
            f"{', '.join(DIMENSIONS)} or metadata.KEY, comma-separated (e.g. --by day,model)"
        )
    return dims


def attempt_kind(
    *,
    sent: bool,
    status_code: int | None,
    outcome: str,
    line_state: str,
    first_ok: bool,
    error_class: str = "",
) -> str:
    """Which kind of call an attempt is, for the report (see the module docstring).

    Unknown: sent, and no answer came (a timeout, a dropped connection), or a 2xx came whose body
    was cut off: either way the relay may have done and billed the work without telling how much.
    """
    if sent and (status_code is None or (200 <= status_code < 300 and error_class == "bad_body")):
        return "unknown"
    if line_state == RequestState.FAILED:
        return "failed"
    if outcome == STEP and line_state == RequestState.SUCCEEDED:
        return "succeeded"  # a further charged step of the line's one result (a task's modal step)
    if outcome == "ok" and line_state == RequestState.SUCCEEDED:
        return "succeeded" if first_ok else "duplicate"
    return "other"


def usage_report(
    store: Store,
    job_ids: Sequence[int] | None,
    *,
    by: str | tuple[str, ...] = "job",
    since: date | None = None,
    until: date | None = None,
    prices: PriceBook,
    group: str | None = None,
) -> Report:
    """Count, group and price every call of the jobs (all jobs when ``job_ids`` is None)."""
    dims = parse_by(by) if isinstance(by, str) else by
    ratio = prices.group_ratio(group)
    groups: dict[tuple[str, ...], Totals] = {}
    with store.session() as session:
        for job_id in job_ids or ():
            q.get_job(session, job_id)  # an unknown job is an error, not an empty report
        jobs = JobCache(session)
        for row in q.iter_calls(session, job_ids=job_ids, since=since, until=until):
            key = tuple(key_value(d, row, jobs) for d in dims)
            count_call(groups.setdefault(key, Totals()), row, prices, ratio)
        saved = cache_saved(session, job_ids, prices, ratio=ratio)
    rows = [ReportRow(k, t) for k, t in sorted(groups.items())]
    return Report(dims, rows, _sum(groups.values()), prices, group, saved)


# --- grouping -----------------------------------------------------------------------------------


class JobCache:
    """Names and options of the jobs met so far (a report spans few jobs)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._jobs: dict[int, tuple[str, JobOptions]] = {}

    def get(self, job_id: int) -> tuple[str, JobOptions]:
        if job_id not in self._jobs:
            job = q.get_job(self._session, job_id)
            self._jobs[job_id] = (job.name, q.options_of(job))
        return self._jobs[job_id]


def key_value(dim: str, row: q.CallRow, jobs: JobCache) -> str:
    if dim == "job":
        return f"{row.job_id}:{jobs.get(row.job_id)[0]}"
    if dim in _OF_THE_ROW:
        return _OF_THE_ROW[dim](row)
    options = jobs.get(row.job_id)[1]
    if dim == "tag":
        return options.tag or NO_TAG
    return options.metadata.get(dim.removeprefix(METADATA_PREFIX), NO_TAG)


def _family_label(endpoint: Endpoint) -> str:
    """Gemini's routes name their model: one family, many endpoints."""
    family = family_of(endpoint)
    return f"{family.name} ({family.billed_in})"


def route_value(dim: str, label: str | None) -> str:
    """A routed call's provider, or its key (``relay-a/RELAY_A_KEY …1a2b``: name and last 4)."""
    label = label or "default"
    return label.partition("/")[0] if dim == "provider" else label


def _utc_day(started: datetime) -> str:
    # SQLite hands back naive datetimes; the store writes them in UTC.
    aware = started if started.tzinfo else started.replace(tzinfo=UTC)
    return aware.astimezone(UTC).date().isoformat()


_OF_THE_ROW: dict[str, Callable[[q.CallRow], str]] = {
    "model": lambda row: str(row.line_model),
    "endpoint": lambda row: row.line_endpoint.path,
    "family": lambda row: _family_label(row.line_endpoint),
    "day": lambda row: _utc_day(row.started_at),
    "provider": lambda row: route_value("provider", row.provider),
    "key": lambda row: route_value("key", row.provider),
}


# --- counting one call --------------------------------------------------------------------------


def _unknown_media(row: q.CallRow) -> Usage | None:
    """What a call billed by characters, seconds or images may have used, read from its line."""
    try:
        body = json.loads(row.unknown_body or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    usage = family_of(row.line_endpoint).expected_usage(body, default=None)
    return usage if usage.characters or usage.seconds or usage.images else None


def count_call(totals: Totals, row: q.CallRow, prices: PriceBook, ratio: Decimal) -> None:
    """Add one Attempt row (joined with its line) to a group's totals (a packed call's once)."""
    new = totals.new_call(row.call_id)
    totals.calls += new
    kind = attempt_kind(
        sent=row.sent,
        status_code=row.status_code,
        outcome=row.outcome,
        line_state=row.line_state,
        first_ok=row.first_ok,
        error_class=row.error_class,
    )
    if kind == "unknown":
        _count_unknown(totals, row, prices, ratio, new=new)
        return
    usage = row.usage
    if usage is None:
        return
    totals.billed_calls += new
    if usage.estimated:
        totals.estimated_calls += new
        totals.estimated += usage
    totals.tokens[kind] += usage
    totals.characters += usage.characters
    if row.relay_quota is not None:  # the relay's own final charge (a task's quota): no price needed
        totals.cost += Decimal(row.relay_quota) / QUOTA_PER_USD
        return
    cost = cost_of_attempt(usage, prices.lookup(row.priced_as), group_ratio=ratio)
    _add_cost(totals, row.line_model, cost, unknown=False, new=new)


def _count_unknown(totals: Totals, row: q.CallRow, prices: PriceBook, ratio: Decimal, *, new: bool) -> None:
    totals.unknown_calls += new
    price = prices.lookup(row.priced_as)
    usage = row.line_usage
    if usage is not None:
        totals.tokens["unknown"] += usage
        cost = cost_of_attempt(usage, price, group_ratio=ratio)
    elif (media := _unknown_media(row) if row.unknown_body else None) is not None:
        totals.tokens["unknown"] += media
        cost = cost_of_attempt(media, price, group_ratio=ratio)
    else:
        tokens = row.line_est_tokens
        totals.tokens["unknown"] += Usage(prompt_tokens=tokens)
        cost = upper_bound_cost(tokens, 0, price, group_ratio=ratio)
    _add_cost(totals, row.line_model, cost, unknown=True, new=new)


def _add_cost(totals: Totals, model: str, cost: Decimal | None, *, unknown: bool, new: bool) -> None:
    if cost is None:
        totals.unpriced_calls += new
        totals.unpriced_models.add(model)
    elif unknown:
        totals.unknown_cost += cost
    else:
        totals.cost += cost


def _sum(parts: Iterable[Totals]) -> Totals:
    out = Totals()
    for totals in parts:
        out.merge(totals)
    return out


def unpriced_hint(models: Iterable[str]) -> str:
    """What to do about models with no price: a ``--prices FILE`` with an example entry."""
    ordered = sorted(models)
    names = ", ".join(ordered)
    example = ordered[0] if ordered else "my-model"
    return (
        f"no price for {names}: their cost is not counted. "
        "Add them with --prices FILE, e.g. a prices.toml with\n"
        f'  [models."{example}"]\n'
        "  input = 0.50    # USD per 1M input tokens\n"
        "  output = 1.50   # USD per 1M output tokens"
    )
