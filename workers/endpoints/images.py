"""Images: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` and ``/variations`` (multipart).

One answer shape for every model relays serve in OpenAI's format (DALL·E 2/3, gpt-image-1,
flux, stable-diffusion, ideogram, recraft): ``{"created", "data": [{"url"} or {"b64_json"},
...], "usage"?}``. Every image is saved under the job's results folder (``workers.callfiles``):
``b64_json`` decoded, a ``url`` downloaded (``workers.downloads``); the stored body keeps each
item with ``"file"`` (the saved path) in place of the base64, and a URL that could not be
fetched stays with ``"download_error"`` saying why. Exports show the files as the line's text.

Billing: per image (``n``, default 1) at the ``per_image`` price of the model at the line's size
and quality (``price_key``: ``hd/1024-x-1792/dall-e-3``, as LiteLLM names them), and gpt-image-1's
token ``usage`` (``input_tokens``, ``output_tokens``) instead when the answer has it
(``workers.cost``: reported tokens win over the per-image price). Edits and
variations upload ``image`` (gpt-image-1 takes a list) and ``mask``, named like audio files
(a path beside the input file, or a ``data:`` URL). new-api does not implement variations: it
answers 501, which fails the job's variation lines at once (``workers.retry``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family, ParsedAnswer, positive_int, type_name
from workers.endpoints.filefields import IMAGE_FILE, MASK_FILE, VARIATION_FILE, FileRule
from workers.prices import normalize_model
from workers.tokens import estimate_text_tokens

GENERATIONS = Endpoint("/v1/images/generations")
EDITS = Endpoint("/v1/images/edits")
VARIATIONS = Endpoint("/v1/images/variations")
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")


class ImageFamily(Family):
    """What generations, edits and variations share: the answer, the images, the billing."""

    billed_in: ClassVar[str] = "images"

    def repeatable(self, body: Body) -> bool | None:
        return None  # the answer names image files saved in its own job's folder

    def check(self, body: Body) -> None:
        if self.needs_prompt(body):
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise BodyError('images need "prompt": the non-empty text describing the image')
        if "n" in body and positive_int(body["n"]) is None:
            raise BodyError(f'"n" must be a positive integer (got {body["n"]!r})')
        for key, allowed in (("response_format", RESPONSE_FORMATS), ("output_format", OUTPUT_FORMATS)):
            if key in body and body[key] not in allowed:
                raise BodyError(f'"{key}" must be one of {", ".join(allowed)} (got {body[key]!r})')
        for key in ("size", "quality", "style"):
            if key in body and not isinstance(body[key], str):
                raise BodyError(f'"{key}" must be a string (got {type_name(body[key])})')

    def needs_prompt(self, body: Body) -> bool:
        return True

    def price_key(self, model: str, body: Body) -> str | None:
        """``quality/W-x-H/model`` (LiteLLM's names): images cost by size and quality."""
        return image_price_key(model, body.get("size"), body.get("quality"))

    def prompt_tokens(self, body: Body) -> int:
        prompt = body.get("prompt")
        return estimate_text_tokens(prompt) if isinstance(prompt, str) else 0

    def expected_usage(self, body: Body, *, default: int | None = None) -> Usage:
        return Usage(images=images_asked(body))

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        """The answer as stored (images are saved apart by the caller) and its usage."""
        body = orjson.loads(content)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
            raise ValueError('an image answer must have a non-empty "data" list of objects')
        return ParsedAnswer(orjson.dumps(body).decode(), image_usage(body, len(data)), body=body)

    def image_format(self, request: Body) -> str:
        """The extension of a saved ``b64_json`` image (gpt-image-1's ``output_format``, else png)."""
        fmt = request.get("output_format")
        return "jpg" if fmt == "jpeg" else fmt if fmt in OUTPUT_FORMATS else "png"

    def answer_text(self, answer: Body) -> str | None:
        """The saved files, one a line (a URL that could not be fetched shows as the URL)."""
        items = answer.get("data") or []
        names = [d.get("file") or d.get("url") for d in items if isinstance(d, dict)]
        return "\n".join(str(n) for n in names if n) or None


class Images(ImageFamily):
    """``/v1/images/generations``."""

    paths: ClassVar[tuple[str, ...]] = (GENERATIONS.path,)
    name: ClassVar[str] = "images"


class ImageEdits(ImageFamily):
    """``/v1/images/edits`` (multipart: it uploads ``image`` and ``mask``)."""

    paths: ClassVar[tuple[str, ...]] = (EDITS.path,)
    name: ClassVar[str] = "image_edits"
    file_fields: ClassVar[Mapping[str, FileRule]] = {"image": IMAGE_FILE, "mask": MASK_FILE}

    def check(self, body: Body) -> None:
        if "image" not in body:
            raise BodyError('edits need "image": a path beside the input file or a data: URL')
        super().check(body)


class ImageVariations(ImageFamily):
    """``/v1/images/variations`` (multipart: one ``image``, no prompt)."""

    paths: ClassVar[tuple[str, ...]] = (VARIATIONS.path,)
    name: ClassVar[str] = "image_variations"
    file_fields: ClassVar[Mapping[str, FileRule]] = {"image": VARIATION_FILE}

    def check(self, body: Body) -> None:
        if "image" not in body:
            raise BodyError('variations need "image": a path beside the input file or a data: URL')
        super().check(body)

    def needs_prompt(self, body: Body) -> bool:
        return False


def image_price_key(model: str, size: Any, quality: Any) -> str | None:
    """The price table's name of an image of this size and quality: ``hd/1024-x-1792/dall-e-3``.

    ``auto`` (gpt-image-1) or nothing given leaves that part out; neither given is None: the
    model's own ``per_image``. A quality without a size is the 1024×1024 one (every model's default).
    ``PriceBook.lookup`` falls back from the full name to ``W-x-H/model``, then to the model.
    """
    given = [v for v in (quality, size) if isinstance(v, str) and v and v != "auto"]
    if not given:
        return None
    parts = [quality] if quality in given else []
    dims = size if size in given else "1024x1024"
    if not re.fullmatch(r"\d+x\d+", dims):
        return None
    return "/".join([*parts, dims.replace("x", "-x-"), normalize_model(model)])


def images_asked(body: Body) -> int:
    """How many images a request asks for (``n``, default 1)."""
    return positive_int(body.get("n")) or 1


def image_usage(answer: Mapping[str, Any], images: int) -> Usage:
    """The images an answer holds, with gpt-image-1's token usage when it reports some."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        prompt = positive_int(usage.get("input_tokens")) or 0
        completion = positive_int(usage.get("output_tokens")) or 0
        total = positive_int(usage.get("total_tokens")) or prompt + completion
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, images=images)
    return Usage(images=images)
