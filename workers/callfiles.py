"""Files around a call: the input files it uploads, and the files its answer is saved as.

- **Uploads.** A family with ``file_fields`` (transcription, image edits) sends multipart: the
  stored body's references (``jobs.blobs.StoredFile``) are read from the blob store, in a
  thread, only when the call is about to go (inside the executor's byte budget,
  ``workers.answers``), and encoded by ``workers.endpoints.filefields.multipart``.
- **Answers as files.** Speech audio is written to the job's results folder
  (``workers.resultfiles``); the line keeps the path. Every other OK answer is parsed by its
  family (``workers.outcomes.json_results``); an image answer's images are then saved in the
  same folder as ``<line id>-<n>.<ext>``: ``b64_json`` decoded (and dropped from the stored
  body), a ``url`` downloaded (``workers.downloads``: a size cap, a timeout, the key only to the
  relay's own origin). Each item gets ``"file"``; a URL that could not be fetched is kept, with
  ``"download_error"``.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from jobs.blobs import BlobReader, stored_files
from jobs.errors import BlobMissing
from jobs.records import LineResult
from workers import outcomes
from workers.client import ClientConfig
from workers.downloads import Downloader
from workers.endpoints import RequestContent, family_of
from workers.endpoints.filefields import multipart
from workers.endpoints.images import ImageFamily
from workers.outcomes import Call, Clean
from workers.resultfiles import write_result_file
from workers.units import Unit


class CallFiles:
    """Builds a unit's request (uploads included) and turns its OK answer into line results."""

    def __init__(
        self, results_dir: Path, blobs: BlobReader | None = None, client: ClientConfig | None = None
    ) -> None:
        self.results_dir, self._blobs, self._client = results_dir, blobs, client
        self._downloader: Downloader | None = None

    async def request(self, unit: Unit, content: bytes) -> RequestContent:
        """The bytes to send: the family's own request, or the multipart form with the files."""
        family = family_of(unit.endpoint)
        if not family.file_fields:
            return family.request(content)
        body = unit.requests[0]
        contents = await asyncio.to_thread(self._read, body, list(family.file_fields))
        data, content_type = multipart(body, family.file_fields, contents)
        return RequestContent(data, content_type)

    def _read(self, body: dict[str, object], fields: list[str]) -> dict[str, bytes]:
        if self._blobs is None:
            raise BlobMissing("this executor has no blob store to read the line's input files from")
        return {f.sha256: self._blobs(f.sha256) for name in fields for f in stored_files(body.get(name))}

    async def results(self, unit: Unit, call: Call, clean: Clean) -> list[LineResult]:
        """The lines' results of an OK answer (``ValueError`` when it does not parse)."""
        if not outcomes.is_file_answer(unit):
            results = outcomes.json_results(unit, call, clean)
            if isinstance(family_of(unit.endpoint), ImageFamily):
                return [await self._save_images(unit, result, clean) for result in results]
            return results
        item, request = unit.items[0], unit.requests[0]
        assert call.response is not None
        name, content = outcomes.audio_name(item, request), call.response.content
        path = await asyncio.to_thread(write_result_file, self.results_dir, name, content)
        return [outcomes.speech_result(item, request, call, path, clean)]

    async def _save_images(self, unit: Unit, result: LineResult, clean: Clean) -> LineResult:
        family = family_of(unit.endpoint)
        assert isinstance(family, ImageFamily) and result.response_body is not None
        body = orjson.loads(result.response_body)
        for n, item in enumerate(body["data"]):
            await self._save_image(
                item, f"{result.request_id}-{n}", family.image_format(unit.requests[0]), clean
            )
        return replace(result, response_body=orjson.dumps(body).decode())

    async def _save_image(self, item: dict[str, Any], stem: str, fmt: str, clean: Clean) -> None:
        encoded = item.pop("b64_json", None)
        if isinstance(encoded, str):
            data = base64.b64decode(encoded, validate=True)  # not base64: ValueError, the call is retried
        elif isinstance(item.get("url"), str):
            got = await self.downloader().fetch(item["url"])
            if got.content is None:
                item["download_error"] = clean(f"not saved: {got.error}")
                return
            data, fmt = got.content, _IMAGE_TYPES.get(got.content_type.split(";")[0].strip(), fmt)
        else:
            raise ValueError('an image answer item has neither "b64_json" nor "url"')
        path = await asyncio.to_thread(write_result_file, self.results_dir, f"{stem}.{fmt}", data)
        item["file"] = str(path)

    def downloader(self) -> Downloader:
        """The downloader of answer URLs, made on first use (the key only for the relay's origin)."""
        if self._downloader is None:
            config = self._client
            base, key = (config.base_url, config.api_key) if config is not None else (None, None)
            self._downloader = Downloader(base_url=base, key=key)
        return self._downloader

    async def aclose(self) -> None:
        """Close the downloader's connections, if it was used."""
        if self._downloader is not None:
            await self._downloader.aclose()


_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
