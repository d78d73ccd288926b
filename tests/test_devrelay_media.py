"""The stand-in relay's audio-in answers over HTTP: multipart parsed by aiohttp, answers from the upload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.devrelay.media import expected_transcript, sample_wav, transcript_seconds

WAV = sample_wav(2.2)
UPLOAD = {"sha256": hashlib.sha256(WAV).hexdigest(), "filename": "a.wav", "seconds": 2.2}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with RelayServer(RelayConfig()) as relay, httpx.Client(base_url=relay.url) as http:
        yield http


def post(client: httpx.Client, route: str, **fields: object) -> httpx.Response:
    data = {"model": "whisper-1"} | fields
    return client.post(route, data=data, files={"file": ("a.wav", WAV, "audio/wav")})


def test_json_transcript_derives_from_the_upload(client: httpx.Client) -> None:
    answer = post(client, "/audio/transcriptions", language="de")
    assert answer.status_code == 200
    assert answer.json() == {"text": expected_transcript({"file": UPLOAD, "language": "de"})}
    assert transcript_seconds({"file": UPLOAD}) == 3


@pytest.mark.parametrize(("fmt", "start"), [("text", "translate "), ("srt", "1\n00:00:00,000 --> 00:00:03,000"),
                                            ("vtt", "WEBVTT\n\n00:00:00.000")])  # fmt: skip
def test_text_formats_are_plain_text(client: httpx.Client, fmt: str, start: str) -> None:
    answer = post(client, "/audio/translations", response_format=fmt)
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith(start)
    assert expected_transcript({"file": UPLOAD}, "translate") in answer.text


def test_gpt_4o_models_report_token_usage(client: httpx.Client) -> None:
    usage = post(client, "/audio/transcriptions", model="gpt-4o-transcribe").json()["usage"]
    assert usage["type"] == "tokens"
    assert usage["input_tokens"] == 50  # 3 s: ceil(2.2) / 60 × 1000


def test_repeated_fields_and_a_missing_file(client: httpx.Client) -> None:
    verbose = post(client, "/audio/transcriptions", response_format="verbose_json",
                   **{"timestamp_granularities[]": ["word", "segment"]}).json()  # fmt: skip
    assert [w["word"] for w in verbose["words"]] == verbose["text"].split()
    refused = client.post("/audio/transcriptions", data={"model": "whisper-1"}, files={"x": ("a", b"1")})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "file"


def test_generation_urls_are_served_from_another_origin_and_base64_is_the_same_image() -> None:
    from batcher.devrelay.media import expected_image

    with RelayServer(RelayConfig()) as relay, httpx.Client(base_url=relay.url) as http:
        body = {"model": "dall-e-3", "prompt": "a cat", "n": 2}
        [first, second] = http.post("/images/generations", json=body).json()["data"]
        assert first["url"].startswith("http://localhost:")  # not the API's 127.0.0.1
        fetched = httpx.get(first["url"].replace("localhost", "127.0.0.1"))
        assert fetched.content == expected_image(body, "generation", 0)
        b64 = http.post("/images/generations", json=body | {"response_format": "b64_json"}).json()
        import base64

        assert base64.b64decode(b64["data"][1]["b64_json"]) == expected_image(body, "generation", 1)
        assert second["url"] != first["url"]
        gone = http.post("/images/generations", json={"model": "m", "prompt": "x [[unfetchable]]"}).json()
        assert httpx.get(gone["data"][0]["url"].replace("localhost", "127.0.0.1")).status_code == 404
        assert relay.stats()["usage"]["images"] == 5


def test_edits_take_files_and_variations_are_not_implemented(client: httpx.Client) -> None:
    png = {"image[]": ("a.png", b"\\x89PNG", "image/png")}
    edit = client.post("/images/edits", data={"model": "gpt-image-1", "prompt": "hat"}, files=png)
    assert edit.status_code == 200 and edit.json()["usage"]["output_tokens"] == 272
    vary = client.post("/images/variations", data={"model": "dall-e-2"}, files={"image": ("a.png", b"x")})
    assert vary.status_code == 501
    assert vary.json()["error"]["code"] == "api_not_implemented"
