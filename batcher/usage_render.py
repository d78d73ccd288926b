"""Showing a usage report: a text table with notes, CSV, JSON, and a stacked bar chart.

Money is rounded only here, for people (``MONEY_PLACES`` decimals in the table); CSV and JSON carry
the exact ``Decimal`` as a string so that scripts can add it up without float error. The chart
needs matplotlib, an optional extra (``pip install 'batcher[plot]'``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from batcher.cache_report import saved_note
from batcher.render import table, to_json
from batcher.usage import KINDS, Report, Totals, unpriced_hint
from jobs.errors import ConfigError

MONEY_PLACES = Decimal("0.000001")
TOKEN_KINDS = ("succeeded", "duplicate", "failed", "unknown")


def money_text(amount: Decimal) -> str:
    """An amount for people: six decimals (API calls cost fractions of a cent)."""
    return str(amount.quantize(MONEY_PLACES))


def _numbers(report: Report, t: Totals) -> list[Any]:
    billed = t.billed
    kinds = [t.tokens[k].tokens for k in TOKEN_KINDS]
    money = [_cost_cell(report, t), money_text(report.money(t.unknown_cost))]
    return [
        t.calls,
        t.billed_calls,
        billed.prompt_tokens,
        billed.completion_tokens,
        billed.tokens,
        *kinds,
        t.characters,
        *money,
    ]


def _cost_cell(report: Report, t: Totals) -> str:
    """Confirmed cost, marked where calls of a model with no price are left out (never shown as 0)."""
    if not t.unpriced_calls:
        return money_text(report.money(t.cost))
    if t.unpriced_calls == t.billed_calls + t.unknown_calls:
        return "no price"
    return f"{money_text(report.money(t.cost))} + no price"


def _media(report: Report, t: Totals) -> list[Any]:
    """Audio seconds and images billed, as columns only when the report has any."""
    total, billed = report.total.billed, t.billed
    seconds = (
        f"{billed.seconds:f}".rstrip("0").rstrip(".") if "." in f"{billed.seconds:f}" else billed.seconds
    )
    return ([seconds] if total.seconds else []) + ([billed.images] if total.images else [])


def _plain(number: Decimal) -> str:
    """A decimal without trailing zeros and without an exponent (``67``, ``2.5``)."""
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _media_headers(report: Report) -> list[str]:
    total = report.total.billed
    return (["audio s"] if total.seconds else []) + (["images"] if total.images else [])


def _compact(report: Report, t: Totals) -> list[Any]:
    billed = t.billed
    chars = [t.characters] if report.total.characters else []
    return [t.calls, billed.prompt_tokens, billed.completion_tokens, *chars, *_media(report, t),
            _cost_cell(report, t), money_text(report.money(t.unknown_cost))]  # fmt: skip


def render_table(report: Report, *, wide: bool = False) -> str:
    """The report as an aligned table with a totals row, then notes on what the numbers mean.

    The default table (calls, tokens in and out, cost and its unknown bound) fits 100 columns for
    one or two short dimensions; ``wide`` adds billed calls and tokens by kind.
    """
    if wide:
        return _wide_table(report)
    cur = report.prices.currency
    chars = ["chars"] if report.total.characters else []
    headers = [*report.by, "calls", "in tok", "out tok", *chars, *_media_headers(report), f"cost {cur}",
               f"unknown ≤ {cur}"]  # fmt: skip
    rows = [[*row.key, *_compact(report, row.totals)] for row in report.rows]
    rows.append(["total", *[""] * (len(report.by) - 1), *_compact(report, report.total)])
    return "\n\n".join([table(headers, rows), *notes(report)])


def _wide_table(report: Report) -> str:
    cur = report.prices.currency
    headers = [
        *report.by,
        "calls",
        "billed",
        "prompt",
        "completion",
        "total",
        *(f"{k} tok" for k in TOKEN_KINDS),
    ]
    headers += ["chars", f"cost {cur}", f"unknown ≤ {cur}"]
    rows = [[*row.key, *_numbers(report, row.totals)] for row in report.rows]
    blank = [""] * (len(report.by) - 1)
    rows.append(["total", *blank, *_numbers(report, report.total)])
    return "\n\n".join([table(headers, rows), *notes(report)])


def notes(report: Report) -> list[str]:
    """What a reader must know: the spend bound, estimated usage, unpriced models, price sources."""
    t, cur = report.total, report.prices.currency
    spent = f"spend: {money_text(report.money(t.cost))} {cur} confirmed"
    if t.unknown_calls:
        spent += (
            f" + at most {money_text(report.money(t.unknown_cost))} {cur} for {t.unknown_calls} calls "
            "sent with no answer (the relay may have billed them)"
        )
    out = [spent]
    if t.estimated_calls:
        out.append(f"{t.estimated_calls} calls answered without usage: batcher estimated their tokens")
    if t.unpriced_models:
        out.append(unpriced_hint(t.unpriced_models))
    saved = saved_note(report.saved, money=money_text(report.money(report.saved.cost)), currency=cur)
    if saved:
        out.append(saved)
    out.append(_price_note(report))
    return out


def _price_note(report: Report) -> str:
    book = report.prices
    note = f"prices: {' + '.join(book.sources)} (defaults taken {book.taken})"
    if book.currency != "USD":
        note += f"; shown in {book.currency} at {book.usd_rate} per USD"
    if report.group:
        note += f"; group {report.group} ×{book.group_ratio(report.group)} on relay prices"
    return note


def _totals_dict(report: Report, t: Totals) -> dict[str, Any]:
    tokens = {
        kind: {"prompt": v.prompt_tokens, "completion": v.completion_tokens, "total": v.tokens,
               "cached": v.cached_tokens, "reasoning": v.reasoning_tokens}
        for kind, v in t.tokens.items()
    }  # fmt: skip
    return {
        "calls": t.calls,
        "billed_calls": t.billed_calls,
        "unknown_calls": t.unknown_calls,
        "tokens": tokens,
        "characters": t.characters,
        "seconds": str(t.billed.seconds),
        "images": t.billed.images,
        "cost": str(report.money(t.cost)),
        "unknown_cost": str(report.money(t.unknown_cost)),
        "estimated_calls": t.estimated_calls,
        "unpriced_calls": t.unpriced_calls,
        "unpriced_models": sorted(t.unpriced_models),
    }


def render_json(report: Report) -> str:
    """The report as JSON; money as exact decimal strings in the display currency."""
    book = report.prices
    data = {
        "by": list(report.by),
        "currency": book.currency,
        "usd_rate": str(book.usd_rate),
        "group": report.group,
        "prices": {"sources": list(book.sources), "taken": book.taken},
        "rows": [
            dict(zip(report.by, r.key, strict=True)) | _totals_dict(report, r.totals) for r in report.rows
        ],
        "total": _totals_dict(report, report.total),
        "cache_saved": _saved_dict(report),
    }
    return to_json(data)


def _saved_dict(report: Report) -> dict[str, Any]:
    saved = report.saved
    return {
        "lines": saved.lines,
        "calls": saved.lines,
        "prompt_tokens": saved.usage.prompt_tokens,
        "completion_tokens": saved.usage.completion_tokens,
        "cost": str(report.money(saved.cost)),
        "unpriced_models": sorted(saved.unpriced_models),
    }


def _csv_rows(report: Report) -> Iterator[list[Any]]:
    kinds = [f"{kind}_{part}" for kind in KINDS for part in ("prompt", "completion")]
    yield [*report.by, "calls", "billed_calls", "unknown_calls", *kinds, "characters", "cost", "unknown_cost",
           "currency", "estimated_calls", "unpriced_calls"]  # fmt: skip
    for key, t in [(r.key, r.totals) for r in report.rows] + [(("total",) * len(report.by), report.total)]:
        used = [t.tokens[kind] for kind in KINDS]
        tokens = [n for u in used for n in (u.prompt_tokens, u.completion_tokens)]
        yield [*key, t.calls, t.billed_calls, t.unknown_calls, *tokens, t.characters,
               report.money(t.cost), report.money(t.unknown_cost), report.prices.currency,
               t.estimated_calls, t.unpriced_calls]  # fmt: skip


def render_csv(report: Report) -> str:
    """The report as CSV, one row per group and a last row ``total``; money exact."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(_csv_rows(report))
    return out.getvalue()


def plot_cost(report: Report, path: Path) -> None:
    """A stacked bar chart of confirmed cost by day (bars) and model (stacks), as PNG."""
    if report.by != ("day", "model"):
        raise ValueError("plot_cost needs a report by day,model")
    plt = _pyplot()
    days = sorted({r.key[0] for r in report.rows})
    models = sorted({r.key[1] for r in report.rows})
    cost = {r.key: float(report.money(r.totals.cost)) for r in report.rows}  # floats: drawing only
    fig, ax = plt.subplots(figsize=(max(6.0, len(days) * 0.6), 4.5))
    bottom = [0.0] * len(days)
    for model in models:
        heights = [cost.get((day, model), 0.0) for day in days]
        ax.bar(days, heights, bottom=bottom, label=model)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel(f"cost ({report.prices.currency})")
    ax.set_title("Cost by day and model")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib: pip install 'batcher[plot]' (or pip install matplotlib)"
        ) from None
    return plt
