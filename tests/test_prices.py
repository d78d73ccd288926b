"""Price files: the default table, the four formats detected from content, name matching, groups."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import ConfigError
from workers.prices import (
    ListPrice,
    PriceBook,
    RelayPrice,
    default_book,
    detect_format,
    load_prices,
    normalize_model,
    parse_prices,
)

NEW_API = {
    "success": True,
    "data": [
        {"model_name": "gpt-4o-mini", "quota_type": 0, "model_ratio": 0.075, "model_price": 0,
         "completion_ratio": 4, "enable_groups": ["default", "vip"]},
        {"model_name": "dall-e-3", "quota_type": 1, "model_ratio": 0, "model_price": 0.04,
         "completion_ratio": 1, "enable_groups": ["default"]},
    ],
    "group_ratio": {"default": 1, "vip": 1.5},
}  # fmt: skip
ONE_API = {
    "ModelRatio": json.dumps({"gpt-4o-mini": 0.075, "tts-1": 7.5}),
    "CompletionRatio": json.dumps({"gpt-4o-mini": 4}),
    "GroupRatio": json.dumps({"default": 1, "svip": 0.8}),
}
LITELLM = {
    "sample_spec": {"max_tokens": "set to max_output_tokens if provider specifies it"},
    "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
               "cache_read_input_token_cost": 1.25e-06, "litellm_provider": "openai"},
    "o3-mini": {"input_cost_per_token": 1.1e-06, "output_cost_per_token": 4.4e-06,
                "output_cost_per_reasoning_token": 4.4e-06},
    "tts-1": {"input_cost_per_character": 1.5e-05, "mode": "audio_speech"},
    "whisper-1": {"input_cost_per_second": 0.0001, "mode": "audio_transcription"},
}  # fmt: skip


def _decimals(data: dict[str, Any]) -> dict[str, Any]:
    """Parse as a price file is parsed: every number a Decimal."""
    return json.loads(json.dumps(data), parse_float=D, parse_int=D)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"models": {"m": {"input": 1}}}, "batcher"),
        (NEW_API, "new-api"),
        (ONE_API, "one-api"),
        ({"data": [{"key": "ModelRatio", "value": "{}"}]}, "one-api"),  # one-api's /api/option
        (LITELLM, "litellm"),
    ],
)
def test_detect_format(data: dict[str, Any], expected: str) -> None:
    assert detect_format(data) == expected


def test_unknown_format_says_which_formats_work() -> None:
    with pytest.raises(ConfigError, match=r"LiteLLM.*\n\[models\.\"my-model\"\]"):
        detect_format({"hello": 1})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("gemini-1.5-pro-latest", "gemini-1.5-pro"),
        ("text-embedding-ada-002", "text-embedding-ada-002"),  # a version, not a date
        ("qwen-max", "qwen-max"),
    ],
)
def test_normalize_model(name: str, expected: str) -> None:
    assert normalize_model(name) == expected


def test_default_table_has_its_date_and_common_models() -> None:
    book = default_book()
    assert book.taken == "2025-04-15"
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o3-mini", "claude-3-5-sonnet", "gemini-1.5-flash",
                  "qwen-plus", "deepseek-chat", "text-embedding-3-small", "tts-1-hd", "whisper-1", "dall-e-3"):  # fmt: skip
        assert book.lookup(model) is not None, model
    assert book.lookup("gpt-4o") == ListPrice(input=D("2.50"), output=D("10.00"), cached=D("1.25"))
    assert book.lookup("tts-1") == ListPrice(characters=D("15.00"))


@pytest.mark.parametrize(
    ("model", "found"),
    [
        ("gpt-4o", "exact"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # normalization never falls back to a shorter name
        ("my-local-llama", None),
    ],
)
def test_lookup_exact_then_normalized(model: str, found: str | None) -> None:
    a, b = ListPrice(input=D(1)), ListPrice(input=D(2))
    book = PriceBook(prices={"gpt-4o": a, "gpt-4o-mini": b})
    expected = {"exact": a, "gpt-4o": a, "gpt-4o-mini": b, None: None}[found]
    assert book.lookup(model) == expected


def test_exact_name_wins_over_normalized() -> None:
    dated, plain = ListPrice(input=D(9)), ListPrice(input=D(1))
    book = PriceBook(prices={"gpt-4o": plain, "gpt-4o-2024-05-13": dated})
    assert book.lookup("gpt-4o-2024-05-13") == dated
    assert book.lookup("gpt-4o-2024-08-06") in (plain, dated)


def test_new_api_pricing_loads_as_is() -> None:
    book = parse_prices(_decimals(NEW_API), source="pricing.json")
    assert book.lookup("gpt-4o-mini") == RelayPrice(model_ratio=D("0.075"), completion_ratio=D(4))
    assert book.lookup("dall-e-3") == RelayPrice(model_ratio=D(0), model_price=D("0.04"))
    assert book.group_ratio("vip") == D("1.5")
    assert book.group_ratio(None) == D(1)


def test_one_api_option_maps_as_json_strings() -> None:
    book = parse_prices(ONE_API, source="options.json")
    assert book.lookup("gpt-4o-mini") == RelayPrice(model_ratio=D("0.075"), completion_ratio=D(4))
    assert book.lookup("tts-1") == RelayPrice(model_ratio=D("7.5"))
    assert book.group_ratio("svip") == D("0.8")


def test_one_api_option_list_with_cache_ratio() -> None:
    data = {"data": [{"key": "ModelRatio", "value": '{"gpt-4o": 1.25}'},
                     {"key": "CacheRatio", "value": '{"gpt-4o": 0.5}'}]}  # fmt: skip
    price = parse_prices(data, source="x").lookup("gpt-4o")
    assert price == RelayPrice(model_ratio=D("1.25"), cache_ratio=D("0.5"))


def test_litellm_cost_map_per_million() -> None:
    book = parse_prices(_decimals(LITELLM), source="litellm.json")
    assert book.lookup("gpt-4o") == ListPrice(input=D("2.5"), output=D(10), cached=D("1.25"))
    o3 = book.lookup("o3-mini")
    assert isinstance(o3, ListPrice) and o3.reasoning == D("4.4")
    assert book.lookup("tts-1") == ListPrice(characters=D(15))
    assert book.lookup("whisper-1") == ListPrice(per_minute=D("0.006"))
    assert book.lookup("sample_spec") is None


def test_unknown_group_says_which_groups_exist() -> None:
    book = parse_prices(_decimals(NEW_API), source="pricing.json")
    with pytest.raises(ConfigError, match=r"no group ratio for group 'gold' \(known groups: default, vip\)"):
        book.group_ratio("gold")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_price_file_overrides_defaults_in_either_syntax(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prices{suffix}"
    if suffix == ".toml":
        path.write_text('currency = "CNY"\nusd_rate = 7.2\n[models."gpt-4o"]\ninput = 1.5\noutput = 6\n')
    else:
        path.write_text(
            '{"currency": "CNY", "usd_rate": 7.2, "models": {"gpt-4o": {"input": 1.5, "output": 6}}}'
        )
    book = load_prices([path])
    assert book.lookup("gpt-4o") == ListPrice(input=D("1.5"), output=D(6))
    assert book.lookup("gpt-4o-mini") is not None  # the defaults are still there
    assert (book.currency, book.usd_rate) == ("CNY", D("7.2"))
    assert book.sources == ("batcher default prices", str(path))


def test_currency_options_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('currency = "CNY"\nusd_rate = 7.2\n[models."x"]\ninput = 1\n')
    book = load_prices([path], currency="EUR", rate=D("0.9"))
    assert (book.currency, book.usd_rate) == ("EUR", D("0.9"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not a price file at all {", "neither JSON nor TOML"),
        ('{"models": {"m": {"inptu": 1}}}', "bad.json: model .m. has unknown price keys"),
        ('{"models": {"m": {"input": "cheap"}}}', "not a number"),
        ("[1, 2]", "one JSON object"),
    ],
)
def test_bad_price_file_says_what_to_do(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prices([path])


def test_image_sizes_price_over_the_model_and_never_stand_for_it() -> None:
    book = parse_prices(
        {"models": {"img": {"per_image": 1, "input": 2}, "hd/1024-x-1024/img": {"per_image": 3},
                    "512-x-512/img": {"per_image": D("0.5")}}},
        source="t",
    )  # fmt: skip
    assert book.lookup("hd/1024-x-1024/img") == ListPrice(input=D(2), per_image=D(3))
    assert book.lookup("hd/512-x-512/img") == ListPrice(input=D(2), per_image=D("0.5"))  # the size's own
    assert book.lookup("hd/2048-x-2048/img") == ListPrice(input=D(2), per_image=D(1))  # the model's
    assert book.lookup("img-2024-08-06") == ListPrice(input=D(2), per_image=D(1))  # not a size's price
    assert book.lookup("hd/1024-x-1024/unknown") is None


def test_litellm_image_prices_per_pixel_become_per_image() -> None:
    data = {
        "hd/1024-x-1792/dall-e-3": {"input_cost_per_pixel": D("6.539e-08"), "output_cost_per_pixel": 0},
        "dall-e-3": {"input_cost_per_image": D("0.04")},
    }
    book = parse_prices(data, source="litellm")
    hd = book.lookup("hd/1024-x-1792/dall-e-3")
    assert hd is not None and isinstance(hd, ListPrice)
    assert hd.per_image == D("6.539e-08") * 1024 * 1792  # 0.1199… : OpenAI's $0.12
    assert book.lookup("dall-e-3") == ListPrice(per_image=D("0.04"))


@pytest.mark.parametrize(
    "model",
    ["claude-opus-4-1-20250805", "claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-3-haiku-20240307",
     "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-embedding-001",
     "omni-moderation-latest", "text-moderation-latest"],
)  # fmt: skip
def test_default_table_prices_claude_gemini_and_moderation_models(model: str) -> None:
    price = default_book().lookup(model)
    assert isinstance(price, ListPrice) and price.input is not None, model
    if model.startswith("claude") and "-4-" in model:  # reads 0.1 ×, 5-minute writes 1.25 ×, 1 h 2 × input
        assert (price.cached, price.cache_write, price.cache_write_1h) == (
            price.input * D("0.1"),
            price.input * D("1.25"),
            price.input * 2,
        )
