"""Images: validation, images billed per image (or by gpt-image-1's tokens), the answer's files."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from jobs.records import Usage
from workers.cost import cost_of_attempt
from workers.endpoints import BodyError, family_of
from workers.endpoints.images import EDITS, GENERATIONS, VARIATIONS
from workers.prices import ListPrice, RelayPrice, default_book
from workers.retry import Verdict, classify_response

IMAGES, EDIT, VARY = family_of(GENERATIONS), family_of(EDITS), family_of(VARIATIONS)


def test_three_families_with_the_uploads_they_take() -> None:
    assert (IMAGES.name, EDIT.name, VARY.name) == ("images", "image_edits", "image_variations")
    assert not IMAGES.file_fields
    assert set(EDIT.file_fields) == {"image", "mask"} and EDIT.file_fields["image"].many
    assert set(VARY.file_fields) == {"image"}


@pytest.mark.parametrize(
    ("family", "body", "message"),
    [
        (IMAGES, {"model": "dall-e-3"}, 'need "prompt"'),
        (IMAGES, {"prompt": "x", "n": 0}, '"n" must be a positive integer'),
        (IMAGES, {"prompt": "x", "response_format": "gif"}, '"response_format" must be one of url, b64_json'),
        (IMAGES, {"prompt": "x", "size": 1024}, '"size" must be a string'),
        (EDIT, {"prompt": "x"}, 'edits need "image"'),
        (EDIT, {"image": "a.png"}, 'need "prompt"'),
        (VARY, {"n": 2}, 'variations need "image"'),
    ],
)
def test_check_names_the_field(family: Any, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        family.check(body)


def test_valid_bodies_pass() -> None:
    IMAGES.check(
        {"prompt": "a cat", "n": 2, "size": "1024x1024", "quality": "hd", "response_format": "b64_json"}
    )
    EDIT.check({"prompt": "a hat", "image": ["a.png", "b.png"], "mask": "m.png"})
    VARY.check({"image": "a.png"})


def test_images_are_the_billing_unit() -> None:
    assert IMAGES.expected_usage({"prompt": "x", "n": 3}) == Usage(images=3)
    assert cost_of_attempt(Usage(images=3), ListPrice(per_image=Decimal("0.04"))) == Decimal("0.12")
    assert cost_of_attempt(Usage(images=2), RelayPrice(model_price=Decimal("0.02"))) == Decimal("0.04")


def test_gpt_image_tokens_are_billed_instead_of_the_per_image_price() -> None:
    answer = {
        "data": [{"b64_json": "AA=="}],
        "usage": {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282},
    }
    usage = IMAGES.parse({"prompt": "x"}, orjson.dumps(answer)).usage
    assert usage == Usage(prompt_tokens=10, completion_tokens=272, total_tokens=282, images=1)
    price = ListPrice(input=Decimal(5), output=Decimal(40), per_image=Decimal("0.042"))
    assert cost_of_attempt(usage, price) == (10 * 5 + 272 * 40) / Decimal(1_000_000)


@pytest.mark.parametrize(
    ("model", "body", "key", "usd"),
    [
        ("dall-e-3", {"size": "1024x1792", "quality": "hd"}, "hd/1024-x-1792/dall-e-3", "0.12"),
        ("dall-e-3", {"size": "1792x1024"}, "1792-x-1024/dall-e-3", "0.08"),  # standard: the default
        ("dall-e-3", {"quality": "hd"}, "hd/1024-x-1024/dall-e-3", "0.08"),  # 1024x1024: the default
        ("dall-e-3", {}, None, "0.04"),
        ("openai/DALL-E-3", {"size": "1024x1024", "quality": "standard"}, "standard/1024-x-1024/dall-e-3", "0.04"),
        ("dall-e-2", {"size": "256x256"}, "256-x-256/dall-e-2", "0.016"),
        ("gpt-image-1", {"size": "1536x1024", "quality": "high"}, "high/1536-x-1024/gpt-image-1", "0.25"),
        ("gpt-image-1", {"size": "auto", "quality": "auto"}, None, "0.042"),
        ("gpt-image-1", {"quality": "low"}, "low/1024-x-1024/gpt-image-1", "0.011"),
        ("dall-e-3", {"size": "2048x2048", "quality": "hd"}, "hd/2048-x-2048/dall-e-3", "0.04"),  # unlisted
        ("dall-e-3", {"size": "big"}, None, "0.04"),
    ],
)  # fmt: skip
def test_an_image_is_priced_by_its_model_size_and_quality(
    model: str, body: dict[str, Any], key: str | None, usd: str
) -> None:
    assert IMAGES.price_key(model, body) == key
    price = default_book().lookup(key or model)
    assert cost_of_attempt(IMAGES.expected_usage({"prompt": "x"} | body), price) == Decimal(usd)


def test_gpt_image_tokens_keep_their_rates_at_every_size() -> None:
    """A size's entry gives its per-image price; the model's token rates still bill reported tokens."""
    price = default_book().lookup("high/1024-x-1536/gpt-image-1")
    assert price == ListPrice(input=Decimal("5.00"), output=Decimal("40.00"), per_image=Decimal("0.25"))
    usage = Usage(prompt_tokens=10, completion_tokens=100, total_tokens=110, images=1)
    assert cost_of_attempt(usage, price) == (10 * 5 + 100 * 40) / Decimal(1_000_000)


@pytest.mark.parametrize("content", [b'{"data": []}', b'{"created": 1}', b'{"data": ["x"]}'])
def test_an_answer_without_images_does_not_parse(content: bytes) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        IMAGES.parse({"prompt": "x"}, content)


def test_exports_name_the_saved_files_or_the_url() -> None:
    answer = {"data": [{"file": "/r/1-0.png"}, {"url": "https://cdn/x.png", "download_error": "HTTP 404"}]}
    assert IMAGES.answer_text(answer) == "/r/1-0.png\nhttps://cdn/x.png"
    assert IMAGES.image_format({"output_format": "jpeg"}) == "jpg"
    assert IMAGES.image_format({}) == "png"


def test_a_501_fails_the_line_without_retries() -> None:
    body = b'{"error":{"message":"API not implemented","type":"new_api_error","code":"api_not_implemented"}}'
    c = classify_response(501, {}, body, now=0)
    assert (c.verdict, c.error_class) == (Verdict.PERMANENT, "not_implemented")
    assert "API not implemented" in c.message
