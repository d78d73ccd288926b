"""Usage and cost report: every upstream call (Attempt row) counted, grouped and priced.

Cost is billed per call, so the report walks the Attempt rows, not the lines' stored results: a
call that answered with usage counts even when its line was called again. Each call is of one kind
(``attempt_kind``):

- ``succeeded``: the call that produced a succeeded line's stored result (its first ``ok`` call);
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

The walk is keyset pages over Attempt ids joined with Request, in constant memory on SQLite and
PostgreSQL; only one accumulator per group and a small cache of jobs are kept. Money is USD
``Decimal`` here; ``Report.money`` converts to the display currency.

Cached and reasoning tokens are read from ``cached_tokens`` / ``reasoning_tokens`` columns of
``attempt`` and ``request`` when the store has them, else taken as 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.models import Attempt, Job, Request, RequestState
from jobs.options import JobOptions
from workers.cost import CallUsage, cost_of_attempt, upper_bound_cost
from workers.prices import PriceBook

KINDS = ("succeeded", "duplicate", "failed", "unknown", "other")
DIMENSIONS = ("job", "model", "endpoint", "day", "tag")
METADATA_PREFIX = "metadata."
PAGE_ROWS = 2000
NO_TAG = "(none)"

_att = Attempt.__table__  # type: ignore[attr-defined]
_req = Request.__table__  # type: ignore[attr-defined]
_job = Job.__table__  # type: ignore[attr-defined]


@dataclass
class Tokens:
    """Token counts of one kind of call."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        """Prompt plus completion (cached and reasoning tokens are parts of those)."""
        return self.prompt + self.completion

    def add(self, usage: CallUsage) -> None:
        """Count one call's usage."""
        self.prompt += usage.prompt_tokens
        self.completion += usage.completion_tokens
        self.cached += usage.cached_tokens
        self.reasoning += usage.reasoning_tokens

    def merge(self, other: Tokens) -> None:
        """Add another count to this one."""
        self.prompt += other.prompt
        self.completion += other.completion
        self.cached += other.cached
        self.reasoning += other.reasoning


@dataclass
class Totals:
    """What one group of calls used and cost (USD)."""

    calls: int = 0
    billed_calls: int = 0  # calls that answered with usage
    tokens: dict[str, Tokens] = field(default_factory=lambda: {k: Tokens() for k in KINDS})
    characters: int = 0
    cost: Decimal = Decimal(0)  # confirmed: calls that answered
    unknown_calls: int = 0
    unknown_cost: Decimal = Decimal(0)  # upper bound of calls whose answer never came
    estimated_calls: int = 0  # usage estimated by batcher: the answer had none
    estimated: Tokens = field(default_factory=Tokens)  # the estimated part of the billed tokens
    unpriced_calls: int = 0
    unpriced_models: set[str] = field(default_factory=set)

    @property
    def billed(self) -> Tokens:
        """Tokens of every call that answered with usage (all kinds but unknown)."""
        out = Tokens()
        for kind in KINDS:
            if kind != "unknown":
                out.merge(self.tokens[kind])
        return out

    def merge(self, other: Totals) -> None:
        """Add another group's totals to these."""
        self.calls += other.calls
        self.billed_calls += other.billed_calls
        for kind in KINDS:
            self.tokens[kind].merge(other.tokens[kind])
        self.characters += other.characters
        self.cost += other.cost
        self.unknown_calls += other.unknown_calls
        self.unknown_cost += other.unknown_cost
        self.estimated_calls += other.estimated_calls
        self.estimated.merge(other.estimated)
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

    def money(self, usd: Decimal) -> Decimal:
        """An amount in the display currency (exact: only a multiplication)."""
        return usd * self.prices.usd_rate


@dataclass(frozen=True)
class UsageQuery:
    """Which calls to count and how to group them."""

    job_ids: Sequence[int] | None = None
    by: tuple[str, ...] = ("job",)
    since: date | None = None
    until: date | None = None  # inclusive


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
    query = UsageQuery(job_ids=job_ids, by=dims, since=since, until=until)
    ratio = prices.group_ratio(group)
    groups: dict[tuple[str, ...], Totals] = {}
    with store.session() as session:
        jobs = _JobCache(session.connection())
        for row in iter_attempt_rows(session.connection(), query):
            key = tuple(_key_value(d, row, jobs) for d in dims)
            count_call(groups.setdefault(key, Totals()), row, prices, ratio)
    rows = [ReportRow(k, t) for k, t in sorted(groups.items())]
    return Report(dims, rows, _sum(groups.values()), prices, group)


# --- the walk -----------------------------------------------------------------------------------


def _optional(table: sa.Table, name: str) -> sa.ColumnElement[Any]:
    """A column the store may not have yet (cached/reasoning tokens): 0 until it does."""
    column = table.c.get(name)
    return sa.literal(0) if column is None else sa.func.coalesce(column, 0)


def _columns() -> list[sa.ColumnElement[Any]]:
    a2 = _att.alias("first_ok")
    first_ok = (
        sa.select(sa.func.min(a2.c.id)).where(a2.c.request_id == _att.c.request_id, a2.c.outcome == "ok")
    ).scalar_subquery()
    # The body is read only where an unknown speech call needs its input's length.
    speech_body = sa.case(
        (sa.and_(_req.c.endpoint == Endpoint.SPEECH.value, _att.c.status_code.is_(None)), _req.c.body),
        else_=sa.null(),
    )
    return [
        *(_att.c[n] for n in ("id", "job_id", "started_at", "status_code", "outcome", "sent", "error_class")),
        *(_att.c[n] for n in ("prompt_tokens", "completion_tokens", "characters", "usage_estimated")),
        _optional(_att, "cached_tokens").label("cached_tokens"),
        _optional(_att, "reasoning_tokens").label("reasoning_tokens"),
        (first_ok == _att.c.id).label("first_ok"),
        *(_req.c[n].label(f"line_{n}") for n in ("state", "model", "endpoint", "est_tokens")),
        *(_req.c[n].label(f"line_{n}") for n in ("prompt_tokens", "completion_tokens", "characters")),
        _optional(_req, "cached_tokens").label("line_cached_tokens"),
        _optional(_req, "reasoning_tokens").label("line_reasoning_tokens"),
        speech_body.label("speech_body"),
    ]


def _filters(query: UsageQuery) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if query.job_ids is not None:
        where.append(_att.c.job_id.in_(list(query.job_ids)))
    if query.since is not None:
        where.append(_att.c.started_at >= datetime.combine(query.since, time(), UTC))
    if query.until is not None:
        where.append(_att.c.started_at < datetime.combine(query.until + timedelta(days=1), time(), UTC))
    return where


def iter_attempt_rows(conn: sa.Connection, query: UsageQuery, *, page: int = PAGE_ROWS) -> Iterator[Any]:
    """Every matching Attempt row joined with its line, in keyset pages of ``page`` rows."""
    base = sa.select(*_columns()).select_from(_att.join(_req, _req.c.id == _att.c.request_id))
    base = base.where(*_filters(query)).order_by(_att.c.id).limit(page)
    last = 0
    while True:
        rows = conn.execute(base.where(_att.c.id > last)).all()
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1].id


class _JobCache:
    """Names and options of the jobs met so far (a report spans few jobs)."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._jobs: dict[int, tuple[str, JobOptions]] = {}

    def get(self, job_id: int) -> tuple[str, JobOptions]:
        if job_id not in self._jobs:
            row = self._conn.execute(sa.select(_job.c.name, _job.c.options).where(_job.c.id == job_id)).one()
            self._jobs[job_id] = (row.name, JobOptions.from_json(row.options))
        return self._jobs[job_id]


def _key_value(dim: str, row: Any, jobs: _JobCache) -> str:
    if dim == "job":
        return f"{row.job_id}:{jobs.get(row.job_id)[0]}"
    if dim == "model":
        return str(row.line_model)
    if dim == "endpoint":
        return str(row.line_endpoint)
    if dim == "day":
        return _utc_day(row.started_at)
    options = jobs.get(row.job_id)[1]
    if dim == "tag":
        return options.tag or NO_TAG
    return options.metadata.get(dim.removeprefix(METADATA_PREFIX), NO_TAG)


def _utc_day(started: datetime) -> str:
    # SQLite hands back naive datetimes; the store writes them in UTC.
    aware = started if started.tzinfo else started.replace(tzinfo=UTC)
    return aware.astimezone(UTC).date().isoformat()


# --- counting one call --------------------------------------------------------------------------


def _usage_columns(row: Any, prefix: str = "") -> CallUsage | None:
    """The usage in a row's attempt columns, or (``prefix="line_"``) in its line's columns."""
    prompt, characters = getattr(row, f"{prefix}prompt_tokens"), getattr(row, f"{prefix}characters")
    if prompt is None and characters is None:
        return None
    return CallUsage(
        prompt_tokens=prompt or 0,
        completion_tokens=getattr(row, f"{prefix}completion_tokens") or 0,
        cached_tokens=int(getattr(row, f"{prefix}cached_tokens")),
        reasoning_tokens=int(getattr(row, f"{prefix}reasoning_tokens")),
        characters=characters or 0,
    )


def _call_usage(row: Any) -> CallUsage | None:
    return _usage_columns(row)


def _line_usage(row: Any) -> CallUsage | None:
    """The usage a succeeded line was stored with (what an unknown call of it most likely used)."""
    if row.line_state != RequestState.SUCCEEDED:
        return None
    return _usage_columns(row, "line_")


def _speech_characters(row: Any) -> int:
    try:
        text = json.loads(row.speech_body or "{}").get("input")
    except (json.JSONDecodeError, AttributeError):
        return 0
    return len(text) if isinstance(text, str) else 0


def count_call(totals: Totals, row: Any, prices: PriceBook, ratio: Decimal) -> None:
    """Add one Attempt row (joined with its line) to a group's totals."""
    totals.calls += 1
    kind = attempt_kind(
        sent=bool(row.sent),
        status_code=row.status_code,
        outcome=row.outcome,
        line_state=row.line_state,
        first_ok=bool(row.first_ok),
        error_class=row.error_class or "",
    )
    if kind == "unknown":
        _count_unknown(totals, row, prices, ratio)
        return
    usage = _call_usage(row)
    if usage is None:
        return
    totals.billed_calls += 1
    totals.estimated_calls += bool(row.usage_estimated)
    if row.usage_estimated:
        totals.estimated.add(usage)
    totals.tokens[kind].add(usage)
    totals.characters += usage.characters
    cost = cost_of_attempt(usage, prices.lookup(row.line_model), group_ratio=ratio)
    _add_cost(totals, row.line_model, cost, unknown=False)


def _count_unknown(totals: Totals, row: Any, prices: PriceBook, ratio: Decimal) -> None:
    totals.unknown_calls += 1
    price = prices.lookup(row.line_model)
    usage = _line_usage(row)
    if usage is not None:
        totals.tokens["unknown"].add(usage)
        cost = cost_of_attempt(usage, price, group_ratio=ratio)
    else:
        characters = _speech_characters(row) if row.speech_body else 0
        tokens = 0 if characters else int(row.line_est_tokens or 0)
        totals.tokens["unknown"].add(CallUsage(prompt_tokens=tokens, characters=characters))
        cost = upper_bound_cost(tokens, characters, price, group_ratio=ratio)
    _add_cost(totals, row.line_model, cost, unknown=True)


def _add_cost(totals: Totals, model: str, cost: Decimal | None, *, unknown: bool) -> None:
    if cost is None:
        totals.unpriced_calls += 1
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
