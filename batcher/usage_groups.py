"""The usage report from the store's sums: what the dashboard's usage page shows at any size.

``batcher.usage.usage_report`` walks every call; at ten million calls that is minutes. This one
reads the store's rollup (``jobs.store.rollup``: the calls that answered, summed by job, UTC day,
model and provider, folded as the page is looked at), so its cost follows the number of groups,
the calls of the last minutes and the unanswered calls, never all the calls:

- the calls the relay said its final charge of (a task's quota) cost the sum of those charges;
- the other answered calls' groups are priced from their sums (``workers.cost.cost_of_calls``: exact
  under list prices; under a relay's token price the per-call rounding, at most 1 quota a call,
  is added to the unknown part, so confirmed + unknown stays an upper bound);
- the unanswered calls (the report's *unknown* kind) and the cached lines are counted as
  ``usage_report`` counts them, one by one, from their partial indexes.

It groups by ``job``, ``model``, ``day``, ``tag``, ``provider``, ``key`` and ``metadata.KEY``
(the rollup keeps no endpoint), and its billed usage is not split by kind (all of it is under
``other``): the totals, costs and unknown part are those of ``usage_report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from batcher.cache_report import cache_saved
from batcher.usage import (
    METADATA_PREFIX,
    NO_TAG,
    JobCache,
    Report,
    ReportRow,
    Totals,
    count_call,
    key_value,
    parse_by,
    route_value,
)
from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from workers.cost import QUOTA_PER_USD, cost_of_calls
from workers.prices import PriceBook

ROLLUP_DIMENSIONS = ("job", "model", "day", "tag", "provider", "key")


def grouped_report(
    store: Store,
    job_ids: Sequence[int] | None = None,
    *,
    by: str | tuple[str, ...] = "job",
    prices: PriceBook,
    group: str | None = None,
) -> Report:
    """The usage report of these jobs (all: None), from the rollup; see the module docstring."""
    dims = _dimensions(by)
    ratio = prices.group_ratio(group)
    with store.session() as session:
        q.fold(session)
    groups: dict[tuple[str, ...], Totals] = {}
    with store.session() as session:
        jobs = JobCache(session)
        for g in q.rollup_groups(session, job_ids=job_ids):
            key = tuple(_group_key(d, g, jobs) for d in dims)
            add_group(groups.setdefault(key, Totals()), g, prices, ratio)
        for row in q.iter_calls(session, job_ids=job_ids, unanswered=True):
            key = tuple(key_value(d, row, jobs) for d in dims)
            count_call(groups.setdefault(key, Totals()), row, prices, ratio)
        saved = cache_saved(session, job_ids, prices, ratio=ratio)
    total = Totals()
    for totals in groups.values():
        total.merge(totals)
    rows = [ReportRow(k, t) for k, t in sorted(groups.items())]
    return Report(dims, rows, total, prices, group, saved)


def add_group(totals: Totals, g: q.RollupGroup, prices: PriceBook, ratio: Decimal) -> None:
    """Add one rollup group (answered calls only) to a report group's totals."""
    totals.calls += g.calls
    totals.billed_calls += g.billed_calls
    totals.tokens["other"] += g.usage
    totals.characters += g.usage.characters
    totals.cost += Decimal(g.relay_quota) / QUOTA_PER_USD  # the relay's own final charges
    priced_calls = g.billed_calls - g.relay_calls
    if not priced_calls:
        return
    charged = replace(g.usage, calls=g.charges)
    priced = cost_of_calls(charged, priced_calls, prices.lookup(g.priced_as), group_ratio=ratio)
    if priced is None:
        totals.unpriced_calls += priced_calls
        totals.unpriced_models.add(g.model)  # as the walk names it
        return
    totals.cost += priced[0]
    totals.unknown_cost += priced[1]


def _dimensions(by: str | tuple[str, ...]) -> tuple[str, ...]:
    dims = parse_by(by) if isinstance(by, str) else by
    bad = [d for d in dims if d not in ROLLUP_DIMENSIONS and not d.startswith(METADATA_PREFIX)]
    if bad:
        raise ConfigError(
            f"the summed report cannot group by {', '.join(bad)}; use {', '.join(ROLLUP_DIMENSIONS)} "
            "or metadata.KEY (`batcher usage --by endpoint` walks every call and can)"
        )
    return dims


def _group_key(dim: str, g: q.RollupGroup, jobs: JobCache) -> str:
    if dim == "job":
        return f"{g.job_id}:{jobs.get(g.job_id)[0]}"
    if dim == "model":
        return g.model
    if dim == "day":
        return g.day
    if dim in ("provider", "key"):
        return route_value(dim, g.provider or None)
    options = jobs.get(g.job_id)[1]
    if dim == "tag":
        return options.tag or NO_TAG
    return options.metadata.get(dim.removeprefix(METADATA_PREFIX), NO_TAG)
