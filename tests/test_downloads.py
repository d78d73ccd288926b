"""Downloading an answer's file: the key only to the relay's origin, a size cap, a timeout, no raise."""

from __future__ import annotations

import asyncio

import httpx

from workers.downloads import Downloader

BASE = "https://relay.example.com/v1"
KEY = "sk-download-test-0123456789"


def downloader(handler: object, **kw: object) -> Downloader:
    return Downloader(base_url=BASE, key=KEY, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


async def test_the_key_goes_to_the_relay_only_and_never_through_a_redirect() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.path == "/hop":
            return httpx.Response(302, headers={"location": "https://cdn.example.net/img.png"})
        return httpx.Response(200, content=b"PNG", headers={"content-type": "image/png"})

    d = downloader(handler)
    assert (await d.fetch("https://relay.example.com/img.png")).content == b"PNG"
    assert (await d.fetch("https://cdn.example.net/img.png")).content == b"PNG"
    assert (await d.fetch("https://relay.example.com/hop")).content_type == "image/png"
    await d.aclose()
    assert seen == [
        ("relay.example.com", f"Bearer {KEY}"),
        ("cdn.example.net", None),
        ("relay.example.com", f"Bearer {KEY}"),
        ("cdn.example.net", None),
    ]


async def test_too_big_answers_are_cut_and_reported() -> None:
    d = downloader(lambda r: httpx.Response(200, content=b"x" * 100), max_bytes=10)
    got = await d.fetch("https://cdn.example.net/big.png")
    assert got.content is None and got.error is not None and "10-byte cap" in got.error

    def streamed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"y" * 100))  # no Content-Length check

    got = await downloader(streamed, max_bytes=10).fetch("https://cdn.example.net/big.png")
    assert got.content is None and "cap" in (got.error or "")


async def test_failures_are_reasons_not_exceptions() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    got = await downloader(slow, timeout=0.05).fetch("https://cdn.example.net/slow.png")
    assert got.content is None and "within 0.05 s" in (got.error or "")
    assert (await downloader(lambda r: httpx.Response(404)).fetch("https://x.example/a")).error == "HTTP 404"

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    assert "ConnectError" in ((await downloader(refused).fetch("https://x.example/a")).error or "")
    assert "not an http(s) URL" in ((await downloader(refused).fetch("file:///etc/passwd")).error or "")
