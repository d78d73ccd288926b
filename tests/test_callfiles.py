"""Files around a call: uploads read from the blob store into multipart, images saved from answers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from jobs.blobs import StoredFile
from jobs.errors import BlobMissing
from jobs.records import WorkItem
from workers.callfiles import CallFiles
from workers.client import ClientConfig, RawResponse
from workers.downloads import Downloader
from workers.endpoints.chat import CHAT
from workers.endpoints.images import GENERATIONS
from workers.endpoints.transcriptions import TRANSCRIPTIONS
from workers.outcomes import Call
from workers.retry import Classification, Verdict
from workers.units import Unit

OK = Classification(Verdict.OK, "ok", "", sent=True)
REF = StoredFile("ab" * 32, "clip.wav", 4)


def unit(endpoint: object, body: dict[str, object]) -> Unit:
    return Unit.single(WorkItem(3, 1, "c", endpoint, "m", orjson.dumps(body).decode(), 0, 1))  # type: ignore[arg-type]


def answered(content: bytes) -> Call:
    return Call(OK, RawResponse(200, httpx.Headers(), content), datetime(2025, 1, 1, tzinfo=UTC), 5)


async def test_a_json_family_sends_its_body_as_is(tmp_path: Path) -> None:
    request = await CallFiles(tmp_path).request(unit(CHAT, {"model": "m"}), b'{"model":"m"}')
    assert (request.content, request.content_type) == (b'{"model":"m"}', "application/json")


async def test_an_upload_reads_its_blob_when_the_call_goes(tmp_path: Path) -> None:
    reads: list[str] = []
    files = CallFiles(tmp_path, lambda sha: reads.append(sha) or b"RIFF")
    request = await files.request(unit(TRANSCRIPTIONS, {"model": "whisper-1", "file": REF.as_json()}), b"")
    assert reads == [REF.sha256]
    assert request.content_type.startswith("multipart/form-data; boundary=")
    assert b'filename="clip.wav"' in request.content and b"RIFF" in request.content
    with pytest.raises(BlobMissing):
        await CallFiles(tmp_path).request(unit(TRANSCRIPTIONS, {"file": REF.as_json()}), b"")


async def test_image_answers_are_saved_and_an_unfetchable_url_is_kept(tmp_path: Path) -> None:
    def cdn(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok.webp":
            return httpx.Response(200, content=b"WEBP", headers={"content-type": "image/webp"})
        return httpx.Response(404)

    files = CallFiles(tmp_path / "job", client=ClientConfig("https://relay.example/v1", "sk-x"))
    files._downloader = Downloader(transport=httpx.MockTransport(cdn))
    answer = {"data": [{"b64_json": base64.b64encode(b"PNG").decode()}, {"url": "https://cdn.example/ok.webp"},
                       {"url": "https://cdn.example/gone.png"}]}  # fmt: skip
    [result] = await files.results(unit(GENERATIONS, {"prompt": "x"}), answered(orjson.dumps(answer)), str)
    await files.aclose()
    data = orjson.loads(result.response_body or "")["data"]
    assert Path(data[0]["file"]).read_bytes() == b"PNG" and "b64_json" not in data[0]
    assert Path(data[1]["file"]).name == "3-1.webp" and Path(data[1]["file"]).read_bytes() == b"WEBP"
    assert data[2] == {"url": "https://cdn.example/gone.png", "download_error": "not saved: HTTP 404"}
    assert result.usage is not None and result.usage.images == 3


async def test_bad_base64_is_a_bad_answer_to_retry(tmp_path: Path) -> None:
    answer = orjson.dumps({"data": [{"b64_json": "@@@"}]})
    with pytest.raises(ValueError):
        await CallFiles(tmp_path).results(unit(GENERATIONS, {"prompt": "x"}), answered(answer), str)
