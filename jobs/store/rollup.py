"""The usage rollup: the calls that answered, summed by job, UTC day, model and provider in the store.

A report over every call (the dashboard's usage page) reads groups here, not calls, so its cost
follows the number of groups and of recent calls, never the calls of all time:

- ``fold`` adds the attempts after the mark (``rollup_mark``) to ``usage_rollup`` with one
  ``GROUP BY`` and moves the mark, in one transaction (the mark's row is locked, so two readers
  folding at once fold each attempt once). Only attempts that started ``SETTLE_S`` before are
  folded, and no further than the last of them: on PostgreSQL two transactions can commit out of
  id order, and an attempt row is written when its call ends (within its timeout), so by then
  every lower id has committed. A journal replayed later inserts new, higher ids: they are folded
  in turn;
- ``rollup_groups`` returns the folded groups plus the same sums over the attempts after the mark
  (the last minutes of calls), read live;
- unanswered calls (no status, or a 2xx whose body was cut: the report's *unknown* kind) are
  never folded: their cost depends on how their line ended, so the report walks them one by one
  (``jobs.store.usage.iter_calls(unanswered=True)``), from their partial index.

Deleting a job deletes its groups (``jobs.store.cleanup``). Calls are counted as the report
counts them: a packed call's lines share a call id and count once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, func

from jobs.migrations import UNANSWERED
from jobs.models import RollupMark, UsageRollup, utcnow
from jobs.records import Usage
from jobs.store.common import ATTEMPT_TABLE, REQUEST_TABLE

SETTLE_S = 300.0  # past the longest call (--timeout 120 s by default), its retries' rows and a flush
MARK = "usage"
ROLLUP_TABLE: Any = UsageRollup.__table__  # type: ignore[attr-defined]
_MARK_TABLE: Any = RollupMark.__table__  # type: ignore[attr-defined]
_att, _req, _roll = ATTEMPT_TABLE, REQUEST_TABLE, ROLLUP_TABLE
# The condition of the partial index ix_attempt_unanswered (jobs.migrations.UNANSWERED), named
# with its table: the request table has a status_code too.
_UNANSWERED = UNANSWERED.replace("status_code", "attempt.status_code").replace(
    "error_class", "attempt.error_class"
)
UNANSWERED_CALL = sa.text(f"({_UNANSWERED})")
_ANSWERED_CALL = sa.text(f"NOT ({_UNANSWERED})")
GROUP_COLUMNS = ("job_id", "day", "model", "provider", "price_key", "per_image")
SUM_COLUMNS = (
    "prompt_tokens", "completion_tokens", "characters", "cached_tokens", "reasoning_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "images", "seconds",
)  # fmt: skip
ADDED_COLUMNS = ("calls", "billed_calls", *SUM_COLUMNS, "task_calls", "charges", "relay_calls", "relay_quota")


@dataclass(frozen=True, slots=True)
class RollupGroup:
    """The answered calls of one job, day, model and provider: how many, and what they used."""

    job_id: int
    day: str
    model: str
    provider: str  # '' when calls are not routed
    price_key: str  # the calls' price name when not their model ('' when none; a modal step's own)
    per_image: bool
    calls: int
    billed_calls: int
    usage: Usage
    charges: Decimal  # the per-call charges of the calls with usage priced by the price table
    relay_calls: int = 0  # calls with usage the relay said its final charge of (a task's quota)
    relay_quota: int = 0  # that charge, summed: these calls cost it, not a price

    @property
    def priced_as(self) -> str:
        """The name to look the price up by."""
        return self.price_key or self.model


def fold(session: Session, *, now: datetime | None = None) -> int:
    """Fold the settled attempts after the mark into the rollup; return the new mark."""
    conn = session.connection()
    mark = _locked_mark(conn)
    before = (now or utcnow()) - timedelta(seconds=SETTLE_S)
    upto = conn.execute(
        sa.select(func.coalesce(func.max(_att.c.id), 0)).where(
            _att.c.id > mark, _att.c.started_at < before.astimezone(UTC)
        )
    ).scalar_one()
    if upto <= mark:
        return int(mark)
    groups = _sums(conn, after=int(mark), upto=int(upto))
    if groups:
        conn.execute(sa.text(_upsert_sql()), [_values(g) for g in groups])
    conn.execute(sa.update(_MARK_TABLE).where(_MARK_TABLE.c.name == MARK).values(attempt_id=upto))
    return int(upto)


def rollup_groups(session: Session, *, job_ids: Sequence[int] | None = None) -> list[RollupGroup]:
    """The folded groups and the live sums of the attempts after the mark (unmerged)."""
    conn = session.connection()
    mark_query = sa.select(_MARK_TABLE.c.attempt_id).where(_MARK_TABLE.c.name == MARK)
    mark = int(conn.execute(mark_query).scalar_one())
    query = sa.select(_roll)
    if job_ids is not None:
        query = query.where(_roll.c.job_id.in_(list(job_ids)))
    folded = [_group(r) for r in conn.execute(query)]
    return folded + _sums(conn, after=mark, upto=None, job_ids=job_ids)


def forget_jobs(session: Session, job_ids: Sequence[int]) -> None:
    """Drop the groups of deleted jobs."""
    session.connection().execute(sa.delete(_roll).where(_roll.c.job_id.in_(list(job_ids))))


def _locked_mark(conn: sa.Connection) -> int:
    query = sa.select(_MARK_TABLE.c.attempt_id).where(_MARK_TABLE.c.name == MARK)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def _day(conn: sa.Connection) -> sa.ColumnElement[str]:
    """The UTC day of a call's start as ``YYYY-MM-DD`` (SQLite keeps UTC text; PostgreSQL timestamptz)."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", _att.c.started_at), "YYYY-MM-DD")
    return func.substr(_att.c.started_at, 1, 10)


def _sums(
    conn: sa.Connection, *, after: int, upto: int | None, job_ids: Sequence[int] | None = None
) -> list[RollupGroup]:
    """The answered attempts with ids in (after, upto], summed by group, in one ``GROUP BY``."""
    has_usage = _att.c.prompt_tokens.is_not(None) | _att.c.characters.is_not(None)
    call = func.coalesce(_att.c.call_id, sa.cast(_att.c.id, sa.String))
    charge = func.coalesce(_att.c.calls, 1)  # what a per-call price multiplies (a video's seconds × size)
    priced = has_usage & _att.c.relay_quota.is_(None)  # the relay's own final charge replaces the price
    relay_quota = _att.c.relay_quota
    relay_billed = has_usage & relay_quota.is_not(None)
    tokens = func.coalesce(_att.c.prompt_tokens, 0) + func.coalesce(_att.c.completion_tokens, 0)
    keys = [
        _att.c.job_id,
        _day(conn).label("day"),
        _req.c.model,
        func.coalesce(_att.c.provider, "").label("provider"),
        func.coalesce(_att.c.price_key, _req.c.price_key, "").label("price_key"),
        ((tokens == 0) & (func.coalesce(_att.c.images, 0) > 0)).label("per_image"),
    ]
    where = [_att.c.id > after, _ANSWERED_CALL]
    if upto is not None:
        where.append(_att.c.id <= upto)
    if job_ids is not None:
        where.append(_att.c.job_id.in_(list(job_ids)))
    query = (
        sa.select(
            *keys,
            func.count(sa.distinct(call)).label("calls"),
            func.count(sa.distinct(sa.case((has_usage, call)))).label("billed_calls"),
            *(func.coalesce(func.sum(_att.c[n]), 0).label(n) for n in SUM_COLUMNS),
            func.coalesce(func.sum(_att.c.calls), 0).label("task_calls"),
            func.coalesce(func.sum(sa.case((priced, charge), else_=0)), 0).label("charges"),
            func.count(sa.distinct(sa.case((relay_billed, call)))).label("relay_calls"),
            func.coalesce(func.sum(sa.case((relay_billed, _att.c.relay_quota), else_=0)), 0).label(
                "relay_quota"
            ),
        )
        .select_from(_att.join(_req, _req.c.id == _att.c.request_id))
        .where(*where)
        .group_by(*keys)
    )
    return [_group(r) for r in conn.execute(query)]


def _group(row: Any) -> RollupGroup:
    m = row._mapping
    usage = Usage(
        prompt_tokens=int(m["prompt_tokens"]),
        completion_tokens=int(m["completion_tokens"]),
        characters=int(m["characters"]),
        cached_tokens=int(m["cached_tokens"]),
        reasoning_tokens=int(m["reasoning_tokens"]),
        cache_write_tokens=int(m["cache_write_tokens"]),
        cache_write_1h_tokens=int(m["cache_write_1h_tokens"]),
        images=int(m["images"]),
        seconds=Decimal(str(m["seconds"])),
        calls=Decimal(str(m["task_calls"])),
    )
    return RollupGroup(
        int(m["job_id"]), str(m["day"]), str(m["model"]), str(m["provider"]), str(m["price_key"]),
        bool(m["per_image"]),
        int(m["calls"]), int(m["billed_calls"]), usage, Decimal(str(m["charges"])),
        int(m["relay_calls"]), int(m["relay_quota"]),
    )  # fmt: skip


def _values(g: RollupGroup) -> dict[str, Any]:
    u = g.usage
    sums = {n: getattr(u, n) for n in SUM_COLUMNS if n != "seconds"}
    return {
        "job_id": g.job_id, "day": g.day, "model": g.model, "provider": g.provider,
        "price_key": g.price_key, "per_image": g.per_image, "calls": g.calls,
        "billed_calls": g.billed_calls, **sums, "seconds": float(u.seconds),
        "task_calls": float(u.calls), "charges": float(g.charges),
        "relay_calls": g.relay_calls, "relay_quota": g.relay_quota,
    }  # fmt: skip


def _upsert_sql() -> str:
    """Add a group's sums to its row (SQLite and PostgreSQL spell ``ON CONFLICT`` alike)."""
    columns = (*GROUP_COLUMNS, *ADDED_COLUMNS)
    updates = ", ".join(f"{n} = usage_rollup.{n} + excluded.{n}" for n in ADDED_COLUMNS)
    return (
        f"INSERT INTO usage_rollup ({', '.join(columns)}) VALUES ({', '.join(':' + n for n in columns)}) "
        f"ON CONFLICT ({', '.join(GROUP_COLUMNS)}) DO UPDATE SET {updates}"
    )
