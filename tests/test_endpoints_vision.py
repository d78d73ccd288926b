"""Image parts are counted by OpenAI's detail rule from the image's size, never its base64 length."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson
import pytest

from batcher.reader import LineError, ReadOptions, parse_line
from workers.endpoints import family_of
from workers.endpoints.chat import CHAT
from workers.endpoints.vision import data_url_size, image_size, image_tokens, part_tokens


def png(width: int, height: int, padding: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\0" * padding
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof


def data_url(raw: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((1024, 1024), "high", 765), ((2048, 4096), "high", 1105), ((512, 512), "auto", 255),
     ((4096, 8192), "low", 85), ((100, 100), "high", 255)],
)  # fmt: skip
def test_the_detail_rule(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail) == tokens


@pytest.mark.parametrize(
    ("raw", "size"),
    [(png(640, 480), (640, 480)), (jpeg(300, 200), (300, 200)), (b"GIF89a" + struct.pack("<HH", 7, 9), (7, 9)),
     (b"not an image", None)],
)  # fmt: skip
def test_image_sizes_come_from_the_header(raw: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(raw) == size
    assert data_url_size(data_url(raw)) == size


def test_a_big_data_url_costs_by_its_size_not_its_length() -> None:
    small_but_long = data_url(png(64, 64, padding=300_000))  # 400 KB of base64
    part = {"type": "image_url", "image_url": {"url": small_but_long}}
    assert part_tokens(part) == 255
    assert part_tokens(part | {"image_url": {"url": small_but_long, "detail": "low"}}) == 85
    assert part_tokens({"type": "image_url", "image_url": {"url": "https://x/a.png"}}) == 765


def _chat(content: Any, model: str = "gpt-4o") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return orjson.dumps({"custom_id": "v", "url": "/v1/chat/completions", "body": body})


def test_vision_and_file_analysis_lines_pass_and_are_estimated_by_the_rule() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": data_url(png(1024, 1024))}},
    ]
    line = parse_line(_chat(content), 1, ReadOptions())
    assert family_of(CHAT).prompt_tokens(line.body) == 3 + 4 + 4 + 765
    for model in ("gpt-4-all", "gpt-4o-all"):
        text = [{"type": "text", "text": "summarise https://example.com/report.pdf"}]
        assert parse_line(_chat(text, model), 1, ReadOptions()).model == model


def test_an_image_part_without_a_url_is_refused() -> None:
    with pytest.raises(LineError, match=r"messages\[0\].content\[1\] is an image without a URL"):
        parse_line(
            _chat([{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "x.png"}}]),
            1,
            ReadOptions(),
        )
