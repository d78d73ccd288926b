"""Fetching a file an answer points to (an image URL): a size cap, a timeout, and the key kept home.

An answer may name a URL on any host (a CDN, an object store, the relay itself). The download:

- goes only to ``http``/``https`` URLs;
- carries the API key only when the URL is on the configured relay's own origin
  (``workers.client.OriginBearerAuth``); redirects are followed (at most ``MAX_REDIRECTS``) and
  httpx drops the ``Authorization`` header whenever a redirect leaves that origin, so the key
  never reaches another host;
- stops past ``max_bytes`` (a ``Content-Length`` over it is refused before any byte, a stream
  that grows past it is cut) and past ``timeout`` seconds in all;
- never raises for the URL's sake: a failure is a ``Download`` with the reason, which the caller
  keeps next to the URL.

Used by image answers (``workers.callfiles``) and meant for any answer that names a file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from workers.client import OriginBearerAuth

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024  # a 4096² PNG is ~30 MB
DOWNLOAD_TIMEOUT_S = 60.0
MAX_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class Download:
    """The bytes fetched, or why there are none."""

    content: bytes | None
    error: str | None = None
    content_type: str = ""


class Downloader:
    """Downloads with one connection pool; ``key`` goes only to ``base_url``'s origin."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        key: str | None = None,
        max_bytes: int = MAX_DOWNLOAD_BYTES,
        timeout: float = DOWNLOAD_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = OriginBearerAuth(key, base_url) if key and base_url else None
        self.max_bytes, self.timeout = max_bytes, timeout
        self._client = httpx.AsyncClient(
            auth=auth,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            trust_env=False,
        )

    async def fetch(self, url: str) -> Download:
        """The file at ``url``, or a ``Download`` saying why not (see the module docstring)."""
        if not url.startswith(("http://", "https://")):
            return Download(None, f"not an http(s) URL: {url[:80]}")
        try:
            return await asyncio.wait_for(self._fetch(url), self.timeout)
        except TimeoutError:
            return Download(None, f"no complete answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Download(None, f"{type(exc).__name__}: {exc}"[:300])

    async def _fetch(self, url: str) -> Download:
        async with self._client.stream("GET", url) as response:
            if response.status_code != 200:
                return Download(None, f"HTTP {response.status_code}")
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                return Download(None, f"{int(length):,} bytes, over the {self.max_bytes:,}-byte cap")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    return Download(None, f"over the {self.max_bytes:,}-byte cap")
                chunks.append(chunk)
            return Download(b"".join(chunks), None, response.headers.get("content-type", ""))

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
