"""The ``usage`` and ``estimate`` commands: thin shells over ``batcher.usage`` and ``batcher.estimate``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

from batcher.cli.base import App, cli, pass_app
from batcher.cli.options import json_option, read_opts, reader_options
from batcher.estimate import Estimate, estimate_file
from batcher.render import table, to_json
from batcher.usage import parse_by, usage_report
from batcher.usage_render import money_text, plot_cost, render_csv, render_json, render_table
from jobs.errors import ConfigError
from workers.journal import journal_dir, replay_dead
from workers.prices import PriceBook, load_prices

F = TypeVar("F", bound=Callable[..., Any])


class DecimalParam(click.ParamType):  # type: ignore[type-arg]
    """A positive exact decimal (an exchange rate): never a float."""

    name = "decimal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not number.is_finite() or number <= 0:
            self.fail(f"{value!r} must be a positive number", param, ctx)
        return number


def price_options(func: F) -> F:
    """Options that choose prices, relay group and currency."""
    decorators = [
        click.option(
            "--prices", "price_files", multiple=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Price file (batcher TOML/JSON, LiteLLM, new-api /api/pricing, one-api ratios); repeatable.",
        ),
        click.option("--group", help="Relay group whose ratio (分组倍率) applies to relay prices."),
        click.option("--currency", help="Show money in this currency (e.g. CNY); needs --rate."),
        click.option("--rate", type=DecimalParam(), help="Units of --currency per USD (e.g. 7.2)."),
    ]  # fmt: skip
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


def _prices(price_files: tuple[Path, ...], currency: str | None, rate: Decimal | None) -> PriceBook:
    if (currency is None) != (rate is None) and not price_files:
        raise click.UsageError("--currency and --rate go together, e.g. --currency CNY --rate 7.2")
    return load_prices(price_files, currency=currency, rate=rate)


def _by(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return parse_by(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@cli.command()
@click.argument("job_ids", metavar="[JOB]...", nargs=-1, type=int)
@click.option(
    "--by", default="job", show_default=True, callback=_by,
    help="Group by job, model, endpoint, family, day, tag, provider, key or metadata.KEY; comma-separated.",
)  # fmt: skip
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First day (UTC) of calls to count.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC) of calls to count.")
@price_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw cost by day and model (PNG)."
)
@click.option(
    "--wide", is_flag=True, help="Every column: billed calls, tokens by kind (succeeded, duplicate, ...)."
)
@pass_app
def usage(
    app: App,
    /,
    *,
    job_ids: tuple[int, ...], by: tuple[str, ...], since: datetime | None, until: datetime | None, fmt: str,
    plot: Path | None, wide: bool, price_files: tuple[Path, ...], group: str | None, currency: str | None,
    rate: Decimal | None,
) -> None:  # fmt: skip
    """Show tokens and cost of every call made, billed retries and duplicates included.

    Cost is confirmed (calls that answered) plus an upper bound for calls sent with no
    answer. Models with no price are marked, never counted as zero.

    \b
    Example:
      batcher usage 3 4 --by model
      batcher usage 3 --wide
      batcher usage --by day,model --since 2025-05-01 --plot cost.png
      batcher usage 3 --prices pricing.json --group vip --currency CNY --rate 7.2
    """
    store = app.store
    replay_dead(store, journal_dir(app.settings.home))  # calls a killed process sent count too
    prices = _prices(price_files, currency, rate)
    window = {"since": since and since.date(), "until": until and until.date()}
    report = usage_report(store, list(job_ids) or None, by=by, prices=prices, group=group, **window)
    text = (
        render_table(report, wide=wide)
        if fmt == "table"
        else {"csv": render_csv, "json": render_json}[fmt](report)
    )
    click.echo(text.rstrip("\n"))
    if plot is not None:
        daily = usage_report(
            store, list(job_ids) or None, by=("day", "model"), prices=prices, group=group, **window
        )
        plot_cost(daily, plot)
        click.echo(f"wrote the chart to {plot}", err=True)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reader_options
@price_options
@click.option(
    "--typical-output",
    type=click.IntRange(min=0),
    help="Output tokens per answer for lines with no max_tokens.",
)
@json_option
def estimate(
    *, file: Path, endpoint: str | None, model: str | None, max_line_bytes: int, stream: bool,
    typical_output: int | None, as_json: bool, price_files: tuple[Path, ...], group: str | None,
    currency: str | None, rate: Decimal | None,
) -> None:  # fmt: skip
    """Estimate the tokens and cost of FILE before running it.

    Prompt tokens are batcher's estimate; output is each line's max tokens (an upper
    bound) or --typical-output. The assumptions are printed with the numbers.

    \b
    Example:
      batcher estimate requests.jsonl --typical-output 300
      batcher estimate docs.jsonl --endpoint /v1/embeddings --model text-embedding-3-small --json
    """
    read = read_opts(
        {"endpoint": endpoint, "model": model, "max_line_bytes": max_line_bytes, "stream": stream}
    )
    result = estimate_file(file, read, _prices(price_files, currency, rate), group, typical_output)
    click.echo(estimate_json(result) if as_json else estimate_text(result))


def estimate_text(result: Estimate) -> str:
    """An estimate as a table per model, its total, and the assumptions."""
    book = result.prices
    seconds, images = any(m.seconds for m in result.models), any(m.images for m in result.models)
    media = ["audio s"] * seconds + ["images"] * images
    headers = ("model", "lines", "prompt tok", "output tok", "chars", *media, f"cost {book.currency}")
    rows: list[list[Any]] = [
        [m.model, m.lines, m.prompt_tokens, m.output_tokens, m.characters,
         *[m.seconds] * seconds, *[m.images] * images,
         money_text(m.cost * book.usd_rate) if m.priced else "no price"]
        for m in result.models
    ]  # fmt: skip
    blank = [""] * (3 + len(media))
    rows.append(
        ["total", sum(m.lines for m in result.models), *blank, money_text(result.cost * book.usd_rate)]
    )
    by_family = [[f.family, f.lines, f"{f.quantity} {f.billed_in}"] for f in result.families]
    parts = [
        table(headers, rows),
        table(("family", "lines", "billed"), by_family),
        "assumptions:\n" + "\n".join(f"- {a}" for a in result.assumptions),
    ]
    if result.invalid_lines:
        parts.append(
            f"{result.invalid_lines} invalid lines were left out; `batcher validate FILE` lists them"
        )
    return "\n\n".join(parts)


def estimate_json(result: Estimate) -> str:
    """An estimate as JSON, money as exact decimal strings in the display currency."""
    rate = result.prices.usd_rate
    models = [
        {"model": m.model, "lines": m.lines, "prompt_tokens": m.prompt_tokens,
         "output_tokens": m.output_tokens, "characters": m.characters,
         "seconds": str(m.seconds), "images": m.images,
         "cost": str(m.cost * rate) if m.priced else None}
        for m in result.models
    ]  # fmt: skip
    data: dict[str, Any] = {
        "currency": result.prices.currency,
        "cost": str(result.cost * rate),
        "models": models,
    }
    data |= {"unpriced_models": sorted(result.unpriced_models), "invalid_lines": result.invalid_lines}
    data["families"] = [
        {"family": f.family, "lines": f.lines, "quantity": f.quantity, "billed_in": f.billed_in}
        for f in result.families
    ]
    return to_json(data | {"assumptions": result.assumptions})
