"""Content parts of chat-like requests: text, and images counted by OpenAI's detail rule.

An image costs tokens by its size, never by the length of its base64 text:

- ``"detail": "low"``: 85 tokens, whatever the size;
- otherwise (``high``, ``auto`` or unset): the image is scaled to fit 2048×2048, then its short
  side to 768 px; each 512-px tile costs 170 tokens, plus 85 (a 1024×1024 image: 765 tokens).

The size of a ``data:`` URL's image is read from its header (PNG, GIF, JPEG, WebP), decoding only
the first bytes of the base64; an image behind an http URL is not fetched, so it is counted as
the largest the rule allows (``IMAGE_TOKENS``, 765): the safe side for a rate limiter.

This module defines no family; chat, responses and Claude's messages count their parts here.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

from workers.endpoints.base import BodyError
from workers.tokens import IMAGE_TOKENS, estimate_text_tokens

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
TILE_PX = 512
HEAD_BASE64 = 65_536  # base64 characters decoded to find a JPEG's size (its SOF may sit after EXIF)
IMAGE_PART_TYPES = ("image_url", "image", "input_image")


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """Tokens of one image of that size by the detail rule of the module docstring."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return TILE_TOKENS * math.ceil(w / TILE_PX) * math.ceil(h / TILE_PX) + LOW_DETAIL_TOKENS


def part_tokens(part: Any) -> int:
    """Tokens of one content part: its text, or its image by the detail rule."""
    if isinstance(part, str):
        return estimate_text_tokens(part)
    if not isinstance(part, dict):
        return 0
    if part.get("type") in IMAGE_PART_TYPES:
        url, detail = image_source(part)
        return url_image_tokens(url, detail)
    text = part.get("text")
    return estimate_text_tokens(text) if isinstance(text, str) else 0


def image_source(part: dict[str, Any]) -> tuple[str, str]:
    """The URL and detail of an image part, in chat's, Responses' or Claude's shape."""
    inner = part.get("image_url")
    if isinstance(inner, dict):
        return str(inner.get("url") or ""), str(inner.get("detail") or part.get("detail") or "auto")
    if isinstance(inner, str):  # the Responses API: "image_url": "https://..."
        return inner, str(part.get("detail") or "auto")
    source = part.get("source")  # Claude: {"type": "base64", "media_type", "data"}
    if isinstance(source, dict) and source.get("type") == "base64" and source.get("data"):
        return f"data:{source.get('media_type')};base64,{source['data']}", "auto"
    if isinstance(source, dict) and isinstance(source.get("url"), str):
        return source["url"], "auto"
    return "", str(part.get("detail") or "auto")


def url_image_tokens(url: str, detail: str = "auto") -> int:
    """Tokens of the image at ``url``: sized from a ``data:`` URL's header, else the largest."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    size = data_url_size(url) if url.startswith("data:") else None
    return image_tokens(*size, detail) if size else IMAGE_TOKENS


def data_url_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 ``data:`` URL's image, or None when it cannot be read."""
    _, _, data = url.partition(";base64,")
    head = data[:HEAD_BASE64]
    head = head[: len(head) - len(head) % 4]
    try:
        raw = base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return None
    return image_size(raw)


def image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, JPEG or WebP file, or None."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) >= 24:
        w, h = struct.unpack(">II", raw[16:24])
        return (w, h) if w and h else None
    if raw[:6] in (b"GIF87a", b"GIF89a") and len(raw) >= 10:
        w, h = struct.unpack("<HH", raw[6:10])
        return (w, h) if w and h else None
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_size(raw)
    if raw.startswith(b"RIFF") and raw[8:12] == b"WEBP":
        return _webp_size(raw)
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker, length = raw[i + 1], struct.unpack(">H", raw[i + 2 : i + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
            return (w, h) if w and h else None
        i += 2 + length
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    chunk = raw[12:16]
    if chunk == b"VP8X" and len(raw) >= 30:
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(raw) >= 30:
        w, h = struct.unpack("<HH", raw[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(raw) >= 25:
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def check_parts(parts: list[Any], *, where: str) -> None:
    """Raise ``BodyError`` for an image part without a usable URL (an http(s) or ``data:`` URL)."""
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in IMAGE_PART_TYPES:
            continue
        url, _ = image_source(part)
        source = part.get("source")
        if "file_id" in part or (isinstance(source, dict) and "file_id" in source):
            continue  # an uploaded file the relay resolves (the Responses API, Claude's Files API)
        if not url.startswith(("http://", "https://", "data:")):
            raise BodyError(
                f'{where}[{i}] is an image without a URL: give "image_url": {{"url": "https://..."}} '
                'or a "data:image/png;base64,..." URL'
            )
