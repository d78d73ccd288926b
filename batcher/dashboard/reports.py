"""The usage page's data: the ``batcher usage`` report by day, model, tag and provider, and a file's estimate.

Both are library calls (``batcher.usage_groups.grouped_report``, ``batcher.estimate.estimate_file``),
turned into plain rows for the templates and JSON. The report is the one ``batcher usage``
gives, read from the store's sums by group rather than from every call, so a look costs the
same at a thousand calls and at ten million; the page keeps one report per grouping for
``REPORT_TTL_S`` seconds all the same, for pages polled by several browsers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from batcher.estimate import Estimate, estimate_file
from batcher.reader import ReadOptions
from batcher.usage import Report, Totals
from batcher.usage_groups import grouped_report
from jobs.db import Store
from workers.prices import load_prices

REPORT_TTL_S = 30.0
GROUPINGS = ("day", "model", "tag", "provider")


@dataclass(frozen=True)
class UsageRow:
    """One group of the usage report: its key, calls, tokens and cost (confirmed, unknown part)."""

    key: str
    calls: int
    billed_calls: int
    prompt_tokens: int
    completion_tokens: int
    characters: int
    cost: Decimal
    unknown_cost: Decimal
    unknown_calls: int
    unpriced: tuple[str, ...]


@dataclass(frozen=True)
class UsageTable:
    """The report grouped by one dimension, with its total row."""

    by: str
    rows: list[UsageRow]
    total: UsageRow
    currency: str

    @property
    def most(self) -> Decimal:
        """The largest confirmed + unknown cost of a row (the charts' full bar)."""
        return max((r.cost + r.unknown_cost for r in self.rows), default=Decimal(0))


def _row(key: str, t: Totals, report: Report) -> UsageRow:
    billed = t.billed
    return UsageRow(
        key=key,
        calls=t.calls,
        billed_calls=t.billed_calls,
        prompt_tokens=billed.prompt_tokens,
        completion_tokens=billed.completion_tokens,
        characters=t.characters,
        cost=report.money(t.cost),
        unknown_cost=report.money(t.unknown_cost),
        unknown_calls=t.unknown_calls,
        unpriced=tuple(sorted(t.unpriced_models)),
    )


class UsageReports:
    """The store's usage report per grouping, kept for ``REPORT_TTL_S`` seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, UsageTable]] = {}
        self._lock = threading.Lock()

    def table(self, by: str) -> UsageTable:
        """The report grouped by ``by`` (one of ``GROUPINGS``)."""
        with self._lock:
            hit = self._cache.get(by)
            if hit is not None and time.monotonic() - hit[0] < REPORT_TTL_S:
                return hit[1]
        report = grouped_report(self.store, by=(by,), prices=load_prices([]))
        rows = [_row(r.key[0], r.totals, report) for r in report.rows]
        made = UsageTable(by, rows, _row("total", report.total, report), report.prices.currency)
        with self._lock:
            self._cache[by] = (time.monotonic(), made)
        return made


def estimate_upload(path: Path, *, typical_output: int | None = None) -> dict[str, Any]:
    """The estimate of an uploaded JSONL file, as plain data for the page."""
    result = estimate_file(path, ReadOptions(), load_prices([]), None, typical_output)
    return estimate_dict(result)


def estimate_dict(result: Estimate) -> dict[str, Any]:
    """An estimate's rows, total and assumptions; money as exact decimal strings."""
    rate = result.prices.usd_rate
    models = [
        {"model": m.model, "lines": m.lines, "prompt_tokens": m.prompt_tokens,
         "output_tokens": m.output_tokens, "characters": m.characters,
         "cost": str(m.cost * rate) if m.priced else None}
        for m in result.models
    ]  # fmt: skip
    return {
        "currency": result.prices.currency,
        "cost": str(result.cost * rate),
        "models": models,
        "invalid_lines": result.invalid_lines,
        "assumptions": result.assumptions,
    }
