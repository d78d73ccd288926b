"""Reading usage back: a job's totals, its spend per model, and every call for the usage report.

Typed rows out, SQL in here only: ``batcher.usage`` (the report) and ``workers.budget`` (the spend
guard) never query the tables themselves. The report's walk is keyset pages over attempt ids
joined with their line, in constant memory on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.endpoints import Endpoint
from jobs.models import RequestState
from jobs.records import Usage
from jobs.store.common import ATTEMPT_TABLE, REQUEST_TABLE
from jobs.store.rollup import UNANSWERED_CALL

_req = REQUEST_TABLE
_att = ATTEMPT_TABLE
PAGE_ROWS = 2000
# A call's price name: its own (a task's modal step, ``mj_modal``), else its line's, else its model.
PRICE_KEY = func.coalesce(_att.c.price_key, _req.c.price_key)


@dataclass(frozen=True, slots=True)
class JobUsage:
    """Token totals of a job: of its succeeded lines, and of every upstream call (billed)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    characters: int
    calls: int
    billed_total_tokens: int


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """What the calls of one model that answered with usage used, summed."""

    model: str
    calls: int
    usage: Usage
    price_key: str | None = None  # the price table's name of these calls when not the model
    provider: str = ""  # the provider/key label, when grouped by it too ('' when not routed)

    @property
    def priced_as(self) -> str:
        """The name to look the price up by."""
        return self.price_key or self.model


@dataclass(frozen=True, slots=True)
class CallRow:
    """One upstream call joined with its line, as the usage report counts it."""

    id: int
    job_id: int
    started_at: datetime
    status_code: int | None
    outcome: str
    sent: bool
    error_class: str
    usage: Usage | None  # what the answer said the call used
    first_ok: bool  # the line's first ok call
    line_state: str
    line_model: str
    line_endpoint: Endpoint
    line_est_tokens: int
    line_usage: Usage | None  # what the line was stored with
    unknown_body: str | None  # only for a call that got no answer: what its line asked for
    call_id: str | None = None  # one per HTTP call: the lines of a packed call share it
    line_price_key: str | None = None  # the call's price name when not its model (an image size, mj_modal)

    provider: str | None = None  # provider/key label of a routed call (batcher.toml)
    relay_quota: int | None = None  # the relay's own final charge of the call (a task's), in quota

    @property
    def priced_as(self) -> str:
        """The name to look the call's price up by."""
        return self.line_price_key or self.line_model


def usage_totals(session: Session, job_id: int) -> JobUsage:
    """Token totals of the job: of its succeeded lines, and of every upstream call (billed)."""
    s = func.coalesce
    lines = session.connection().execute(
        sa.select(
            *(s(func.sum(_req.c[n]), 0) for n in ("prompt_tokens", "completion_tokens", "total_tokens")),
            s(func.sum(_req.c.characters), 0),
        ).where(_req.c.job_id == job_id, _req.c.state == RequestState.SUCCEEDED.value)
    )
    calls = session.connection().execute(
        sa.select(func.count(), s(func.sum(_att.c.total_tokens), 0)).where(_att.c.job_id == job_id)
    )
    line, call = lines.one(), calls.one()
    prompt, completion, total, characters = (int(v) for v in line)
    return JobUsage(
        prompt, completion, total, characters, calls=int(call[0]), billed_total_tokens=int(call[1])
    )


def usage_by_model(session: Session, job_id: int) -> list[ModelUsage]:
    """Per model (and price name): the calls that answered with usage, and what they used."""
    s = func.coalesce
    names = USAGE_COLUMNS
    price_key = PRICE_KEY.label("price_key")
    query = (
        sa.select(
            _req.c.model,
            func.count(_att.c.id),
            *(s(func.sum(_att.c[n]), 0).label(n) for n in names),
            price_key,
        )
        .select_from(_att.join(_req, _att.c.request_id == _req.c.id))
        .where(_att.c.job_id == job_id, _att.c.total_tokens.is_not(None) | _att.c.characters.is_not(None))
        .group_by(_req.c.model, PRICE_KEY)
    )
    rows = session.connection().execute(query)
    return [ModelUsage(str(r[0]), int(r[1]), summed_usage(r), r.price_key) for r in rows]


def summed_usage(row: Any) -> Usage:
    """A row of per-model sums (columns named as the usage fields) as a ``Usage``."""
    return Usage(
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cached_tokens=int(row.cached_tokens),
        reasoning_tokens=int(row.reasoning_tokens),
        cache_write_tokens=int(row.cache_write_tokens),
        cache_write_1h_tokens=int(row.cache_write_1h_tokens),
        characters=int(row.characters),
        seconds=Decimal(str(row.seconds)),
        images=int(row.images),
        calls=Decimal(str(row.calls)),
    )


def iter_calls(
    session: Session,
    *,
    job_ids: Sequence[int] | None = None,
    since: date | None = None,
    until: date | None = None,
    page: int = PAGE_ROWS,
    unanswered: bool = False,
) -> Iterator[CallRow]:
    """Every call of these jobs (all when None) started in [since, until], in ``page``-row pages.

    ``unanswered``: only the calls that may have gone unanswered (no status, or a cut body), read
    from their partial index: what ``jobs.store.rollup`` leaves to the report.
    """
    base = sa.select(*_call_columns()).select_from(_att.join(_req, _req.c.id == _att.c.request_id))
    base = base.where(*_filters(job_ids, since, until)).order_by(_att.c.id).limit(page)
    if unanswered:
        base = base.where(UNANSWERED_CALL)
    conn, last = session.connection(), 0
    while True:
        rows = conn.execute(base.where(_att.c.id > last)).all()
        yield from (_call_row(r) for r in rows)
        if len(rows) < page:
            return
        last = rows[-1].id


def _call_columns() -> list[sa.ColumnElement[Any]]:
    a2 = _att.alias("first_ok")
    first_ok = (
        sa.select(sa.func.min(a2.c.id)).where(a2.c.request_id == _att.c.request_id, a2.c.outcome == "ok")
    ).scalar_subquery()
    # The body is read only for a call that got no answer: its family prices what it may have cost.
    unknown_body = sa.case((_att.c.status_code.is_(None), _req.c.body), else_=sa.null())
    return [
        *(_att.c[n] for n in ("id", "job_id", "started_at", "status_code", "outcome", "sent", "error_class")),
        _att.c.call_id,
        _att.c.provider,
        _att.c.relay_quota,
        *_usage_columns(_att, ""),
        (first_ok == _att.c.id).label("first_ok"),
        *(_req.c[n].label(f"line_{n}") for n in ("state", "model", "endpoint", "est_tokens")),
        PRICE_KEY.label("line_price_key"),
        *_usage_columns(_req, "line_"),
        unknown_body.label("unknown_body"),
    ]


USAGE_COLUMNS = (  # the usage columns reports and the dashboard sum per model
    "prompt_tokens",
    "completion_tokens",
    "characters",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "seconds",
    "images",
    "calls",
)


def _usage_columns(table: sa.Table, prefix: str) -> list[sa.ColumnElement[Any]]:
    return [table.c[n].label(prefix + n) for n in (*USAGE_COLUMNS, "usage_estimated")]


def _filters(
    job_ids: Sequence[int] | None, since: date | None, until: date | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if job_ids is not None:
        where.append(_att.c.job_id.in_(list(job_ids)))
    if since is not None:
        where.append(_att.c.started_at >= datetime.combine(since, time(), UTC))
    if until is not None:
        where.append(_att.c.started_at < datetime.combine(until + timedelta(days=1), time(), UTC))
    return where


def _usage(row: Any, prefix: str) -> Usage | None:
    """The usage in a row's attempt columns, or (``prefix="line_"``) in its line's columns."""
    m = row._mapping
    if m[prefix + "prompt_tokens"] is None and m[prefix + "characters"] is None:
        return None
    return Usage(
        prompt_tokens=int(m[prefix + "prompt_tokens"] or 0),
        completion_tokens=int(m[prefix + "completion_tokens"] or 0),
        characters=int(m[prefix + "characters"] or 0),
        cached_tokens=int(m[prefix + "cached_tokens"] or 0),
        reasoning_tokens=int(m[prefix + "reasoning_tokens"] or 0),
        seconds=Decimal(str(m[prefix + "seconds"] or 0)),
        images=int(m[prefix + "images"] or 0),
        calls=Decimal(str(m[prefix + "calls"] or 0)),
        cache_write_tokens=int(m[prefix + "cache_write_tokens"] or 0),
        cache_write_1h_tokens=int(m[prefix + "cache_write_1h_tokens"] or 0),
        estimated=bool(m[prefix + "usage_estimated"]),
    )


def _call_row(row: Any) -> CallRow:
    return CallRow(
        id=row.id,
        job_id=row.job_id,
        started_at=row.started_at,
        status_code=row.status_code,
        outcome=row.outcome,
        sent=bool(row.sent),
        error_class=row.error_class or "",
        usage=_usage(row, ""),
        first_ok=bool(row.first_ok),
        line_state=row.line_state,
        line_model=row.line_model,
        line_endpoint=Endpoint(row.line_endpoint),
        line_est_tokens=int(row.line_est_tokens or 0),
        line_usage=_usage(row, "line_") if row.line_state == RequestState.SUCCEEDED else None,
        unknown_body=row.unknown_body,
        call_id=row.call_id,
        line_price_key=row.line_price_key,
        provider=row.provider,
        relay_quota=row.relay_quota,
    )
