"""Prices: the shipped default table, price files in four formats, and model-name matching.

A ``PriceBook`` maps model names to prices. It starts from ``workers/data/prices.toml`` (the
providers' list prices, with the date they were taken) and is overridden, file by file, by
``--prices FILE``. The format of a file is detected from its content:

- **batcher** (TOML or JSON): ``[models."NAME"]`` with USD per 1M ``input`` / ``output`` /
  ``cached`` / ``reasoning`` / ``cache_write`` / ``cache_write_1h`` tokens, per 1M
  ``characters``, ``per_minute``, ``per_image``, ``per_call``; optional top-level ``currency`` /
  ``usd_rate`` and ``taken``.
- **litellm**: LiteLLM's ``model_prices_and_context_window.json`` (USD per token, per character,
  per second, per image, and per pixel for its ``quality/W-x-H/model`` image entries).

Images cost by size and quality: a line's price name is ``quality/W-x-H/model``
(``workers.endpoints.images``), priced by that entry over the model's own price (``lookup``).
- **new-api**: the JSON a new-api relay serves at ``GET /api/pricing``
  (``{"data": [{"model_name", "quota_type", "model_ratio", "model_price", "completion_ratio"}],
  "group_ratio": {...}}``).
- **one-api**: one-api's option maps ``ModelRatio`` / ``CompletionRatio`` / ``GroupRatio`` (and
  new-api's ``ModelPrice`` / ``CacheRatio`` / ``CreateCacheRatio``), as objects or as the JSON
  strings the options store,
  also wrapped as ``/api/option``'s ``{"data": [{"key", "value"}]}``.

Relay prices stay ratios (``RelayPrice``): their quota is rounded up per call, so they cannot be
turned into a per-token price without changing the arithmetic (see ``workers.cost``).

Money is ``Decimal`` throughout: JSON and TOML numbers are parsed as ``Decimal``, never float.
Every price is in USD (a relay's quota dollar for relay formats); ``currency`` / ``usd_rate``
say how to show it (``--currency CNY --rate 7.2``), converted only when a report is made.

Model names match exactly first, then by ``normalize_model`` (lower case, no provider prefix,
no date suffix), so ``openai/gpt-4o-2024-08-06`` finds ``gpt-4o``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from jobs.errors import ConfigError

MILLION = Decimal(1_000_000)
EXAMPLE_PRICE_LINE = '[models."my-model"]\ninput = 0.50   # USD per 1M input tokens\noutput = 1.50'
_IMAGE_TIER = re.compile(r"^(?:[a-z]+/)?(?P<rest>\d+-x-\d+/(?P<model>.+))$")  # [quality/]W-x-H/model
_IMAGE_SIZE = re.compile(r"^(?:[a-z]+/)?(?P<w>\d+)-x-(?P<h>\d+)/")
_DATE_SUFFIX = re.compile(r"[-@](\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


@dataclass(frozen=True)
class ListPrice:
    """A price per unit in USD: per 1M tokens or characters, per minute, per image, per call."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached: Decimal | None = None  # None: cached prompt tokens cost as much as the others
    reasoning: Decimal | None = None  # None: reasoning tokens cost as much as output tokens
    cache_write: Decimal | None = None  # prompt tokens written to the cache (None: as input)
    cache_write_1h: Decimal | None = None  # written for an hour (None: as cache_write)
    characters: Decimal | None = None
    per_minute: Decimal | None = None
    per_image: Decimal | None = None
    per_call: Decimal | None = None


@dataclass(frozen=True)
class RelayPrice:
    """A one-api / new-api price: token ratios to quota, or a fixed USD price per call."""

    model_ratio: Decimal = Decimal(0)
    completion_ratio: Decimal = Decimal(1)
    cache_ratio: Decimal | None = None  # new-api: cached prompt tokens count this much
    cache_creation_ratio: Decimal | None = None  # new-api: tokens written to the cache count this much
    cache_creation_1h_ratio: Decimal | None = None  # written for an hour (None: cache_creation_ratio)
    model_price: Decimal | None = None  # quota_type 1: USD per call before the group ratio


Price = ListPrice | RelayPrice


@dataclass(frozen=True)
class PriceBook:
    """Prices by model name, relay group ratios, and how to show money."""

    prices: Mapping[str, Price] = field(default_factory=dict)
    group_ratios: Mapping[str, Decimal] = field(default_factory=dict)
    currency: str = "USD"
    usd_rate: Decimal = Decimal(1)  # units of ``currency`` per USD
    taken: str | None = None
    sources: tuple[str, ...] = ()

    @cached_property
    def _normalized(self) -> dict[str, Price]:
        # Later entries (override files) win over earlier ones with the same normal form; an
        # image size's price (``hd/1024-x-1792/dall-e-3``) is never the model's own.
        return {normalize_model(n): p for n, p in self.prices.items() if not _IMAGE_TIER.match(n)}

    def lookup(self, model: str) -> Price | None:
        """The price of a model: exact name first, then the normalized name; None if unpriced.

        An image's name (``quality/W-x-H/model``, ``workers.endpoints.images``) is priced by its
        own entry, else ``W-x-H/model`` (the size at the default quality), over the model's price
        (so gpt-image-1's token rates stay); without either, by the model's own price.
        """
        tier = _IMAGE_TIER.match(model)
        if tier is None:
            return self.prices.get(model) or self._normalized.get(normalize_model(model))
        base = self.lookup(tier["model"])
        own = self.prices.get(model) or self.prices.get(tier["rest"])
        if isinstance(own, ListPrice) and isinstance(base, ListPrice):
            return replace(
                base, **{f.name: v for f in fields(own) if (v := getattr(own, f.name)) is not None}
            )
        return own or base

    def group_ratio(self, group: str | None) -> Decimal:
        """The relay group ratio (分组倍率) to apply: the named group, else ``default``, else 1."""
        if group is None:
            return self.group_ratios.get("default", Decimal(1))
        if group not in self.group_ratios:
            known = ", ".join(sorted(self.group_ratios)) or "none"
            raise ConfigError(
                f"no group ratio for group {group!r} (known groups: {known}); pass the relay's pricing "
                "with --prices FILE (new-api's GET /api/pricing JSON carries group_ratio)"
            )
        return self.group_ratios[group]

    def merged(self, other: PriceBook, *, currency_set: bool) -> PriceBook:
        """This book overridden by ``other``; ``other``'s currency wins when its file set one."""
        return PriceBook(
            prices={**self.prices, **other.prices},
            group_ratios={**self.group_ratios, **other.group_ratios},
            currency=other.currency if currency_set else self.currency,
            usd_rate=other.usd_rate if currency_set else self.usd_rate,
            taken=self.taken,
            sources=self.sources + other.sources,
        )


def normalize_model(name: str) -> str:
    """The name prices are matched by when no exact entry exists.

    Lower case; no provider prefix (``openai/``, ``azure/``: everything up to the last ``/``); no
    date suffix (``-2024-08-06``, ``-20241022``, ``-0125``, ``@20240620``); no ``-latest``.
    """
    name = name.strip().lower().rsplit("/", 1)[-1]
    name = name.removesuffix("-latest")
    return _DATE_SUFFIX.sub("", name)


# --- loading ------------------------------------------------------------------------------------


def default_book() -> PriceBook:
    """The price table shipped with batcher."""
    text = resources.files("workers").joinpath("data/prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text, parse_float=Decimal)
    book = parse_prices(data, source="batcher default prices")
    return replace(book, taken=str(data.get("taken")))


def load_prices(
    files: Iterable[Path] = (), *, currency: str | None = None, rate: Decimal | None = None
) -> PriceBook:
    """The default table overridden by each file in turn; ``currency``/``rate`` win over files'."""
    book = default_book()
    for path in files:
        data = read_price_file(path)
        book = book.merged(parse_prices(data, source=str(path)), currency_set="currency" in data)
    if currency is not None or rate is not None:
        book = replace(book, currency=currency or book.currency, usd_rate=rate or book.usd_rate)
    return book


def read_price_file(path: Path) -> dict[str, Any]:
    """A price file's content as plain data, numbers as ``Decimal``: JSON, else TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from None
    try:
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except json.JSONDecodeError:
        data = _toml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a price file holds one JSON object or TOML table; {_FORMATS_HINT}")
    return data


def _toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: neither JSON nor TOML ({exc}); {_FORMATS_HINT}") from None


_FORMATS_HINT = (
    "give batcher's own format, LiteLLM's model_prices_and_context_window.json, a new-api "
    "/api/pricing answer or one-api's ModelRatio/CompletionRatio/GroupRatio maps, e.g.\n" + EXAMPLE_PRICE_LINE
)


def detect_format(data: Mapping[str, Any]) -> str:
    """Which price format a file's content is in: batcher, new-api, one-api or litellm."""
    if isinstance(data.get("models"), dict):
        return "batcher"
    rows = data.get("data")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) and "model_name" in r for r in rows):
        return "new-api"
    if any(k in _option_maps(data) for k in _ONE_API_KEYS):
        return "one-api"
    if any(isinstance(v, dict) and _LITELLM_KEYS.intersection(v) for v in data.values()):
        return "litellm"
    raise ConfigError(f"cannot tell the format of this price file; {_FORMATS_HINT}")


def parse_prices(data: Mapping[str, Any], *, source: str) -> PriceBook:
    """A price book from a file's content in any of the four formats."""
    parser = _PARSERS[detect_format(data)]
    try:
        prices, groups = parser(data)
    except (InvalidOperation, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{source}: a price is not a number ({exc}); {_FORMATS_HINT}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    currency = str(data.get("currency") or "USD")
    rate = _dec(data.get("usd_rate")) or Decimal(1)
    return PriceBook(prices, groups, currency=currency, usd_rate=rate, sources=(source,))


def _dec(value: Any) -> Decimal | None:
    """A number as ``Decimal``; strings too (one-api stores options as text); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a price")
    return value if isinstance(value, Decimal) else Decimal(str(value))


# --- the formats --------------------------------------------------------------------------------

Parsed = tuple[dict[str, Price], dict[str, Decimal]]
_LIST_FIELDS = tuple(f.name for f in fields(ListPrice))


def _parse_batcher(data: Mapping[str, Any]) -> Parsed:
    prices: dict[str, Price] = {}
    for name, entry in data["models"].items():
        unknown = set(entry) - set(_LIST_FIELDS)
        if unknown:
            raise ConfigError(
                f"model {name!r} has unknown price keys {sorted(unknown)}; use {', '.join(_LIST_FIELDS)}"
            )
        prices[name] = ListPrice(**{k: _dec(v) for k, v in entry.items()})
    groups = {k: _dec(v) or Decimal(0) for k, v in (data.get("group_ratio") or {}).items()}
    return prices, groups


_LITELLM_KEYS = {
    "input_cost_per_token",
    "output_cost_per_token",
    "input_cost_per_character",
    "input_cost_per_second",
    "output_cost_per_image",
    "input_cost_per_image",
    "input_cost_per_pixel",
}


def _per_million(value: Any) -> Decimal | None:
    number = _dec(value)
    return None if number is None else number * MILLION


def _litellm_price(name: str, entry: Mapping[str, Any]) -> ListPrice:
    per_second = _dec(entry.get("input_cost_per_second"))
    per_image = _dec(entry.get("output_cost_per_image") or entry.get("input_cost_per_image"))
    return ListPrice(
        input=_per_million(entry.get("input_cost_per_token")),
        output=_per_million(entry.get("output_cost_per_token")),
        cached=_per_million(entry.get("cache_read_input_token_cost")),
        reasoning=_per_million(entry.get("output_cost_per_reasoning_token")),
        cache_write=_per_million(entry.get("cache_creation_input_token_cost")),
        cache_write_1h=_per_million(entry.get("cache_creation_input_token_cost_above_1hr")),
        characters=_per_million(entry.get("input_cost_per_character")),
        per_minute=None if per_second is None else per_second * 60,
        per_image=per_image if per_image is not None else _per_pixel_image(name, entry),
    )


def _per_pixel_image(name: str, entry: Mapping[str, Any]) -> Decimal | None:
    """LiteLLM prices DALL·E and gpt-image-1 per pixel under ``hd/1024-x-1792/dall-e-3``: per image here."""
    size = _IMAGE_SIZE.match(name)
    per_pixel = _dec(entry.get("input_cost_per_pixel"))
    return None if size is None or per_pixel is None else per_pixel * int(size["w"]) * int(size["h"])


def _parse_litellm(data: Mapping[str, Any]) -> Parsed:
    prices: dict[str, Price] = {
        name: _litellm_price(name, entry)
        for name, entry in data.items()
        if isinstance(entry, dict) and _LITELLM_KEYS.intersection(entry)
    }
    return prices, {}


def _new_api_price(row: Mapping[str, Any], cache: Mapping[str, Decimal]) -> RelayPrice:
    name = str(row["model_name"])
    per_call = int(_dec(row.get("quota_type")) or 0) == 1
    return RelayPrice(
        model_ratio=_dec(row.get("model_ratio")) or Decimal(0),
        completion_ratio=_dec(row.get("completion_ratio")) or Decimal(1),
        cache_ratio=_dec(row.get("cache_ratio")) or cache.get(name),
        model_price=_dec(row.get("model_price")) if per_call else None,
    )


def _parse_new_api(data: Mapping[str, Any]) -> Parsed:
    maps = _option_maps(data)
    cache = _ratio_map(maps.get("CacheRatio"))
    prices: dict[str, Price] = {str(r["model_name"]): _new_api_price(r, cache) for r in data["data"]}
    groups = _ratio_map(data.get("group_ratio") or maps.get("GroupRatio"))
    return prices, groups


_ONE_API_KEYS = (
    "ModelRatio",
    "CompletionRatio",
    "GroupRatio",
    "ModelPrice",
    "CacheRatio",
    "CreateCacheRatio",
)


def _option_maps(data: Mapping[str, Any]) -> dict[str, Any]:
    """One-api's option maps, from a plain object or from /api/option's key/value list."""
    rows = data.get("data")
    if isinstance(rows, list) and all(isinstance(r, dict) and "key" in r for r in rows):
        return {str(r["key"]): r.get("value") for r in rows}
    return dict(data)


def _ratio_map(value: Any) -> dict[str, Decimal]:
    if isinstance(value, str):  # one-api keeps each map as a JSON string option
        value = json.loads(value, parse_float=Decimal, parse_int=Decimal) if value.strip() else {}
    return {str(k): _dec(v) or Decimal(0) for k, v in (value or {}).items()}


def _parse_one_api(data: Mapping[str, Any]) -> Parsed:
    maps = {k: _ratio_map(v) for k, v in _option_maps(data).items() if k in _ONE_API_KEYS}
    ratios, completion = maps.get("ModelRatio", {}), maps.get("CompletionRatio", {})
    per_call, cache = maps.get("ModelPrice", {}), maps.get("CacheRatio", {})
    prices: dict[str, Price] = {}
    for name in {*ratios, *per_call}:
        prices[name] = RelayPrice(
            model_ratio=ratios.get(name, Decimal(0)),
            completion_ratio=completion.get(name, Decimal(1)),
            cache_ratio=cache.get(name),
            cache_creation_ratio=maps.get("CreateCacheRatio", {}).get(name),
            model_price=per_call.get(name),
        )
    return dict(sorted(prices.items())), maps.get("GroupRatio", {})


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Parsed]] = {
    "batcher": _parse_batcher,
    "litellm": _parse_litellm,
    "new-api": _parse_new_api,
    "one-api": _parse_one_api,
}
