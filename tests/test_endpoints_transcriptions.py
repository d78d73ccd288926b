"""Transcription and translation: validation, billed seconds, answers as returned, the multipart form."""

from __future__ import annotations

from decimal import Decimal
from email.parser import BytesParser
from typing import Any

import orjson
import pytest

from jobs.blobs import StoredFile
from jobs.records import Usage
from workers.cost import audio_tokens, cost_of_attempt
from workers.endpoints import BodyError, family_of
from workers.endpoints.filefields import multipart
from workers.endpoints.transcriptions import TRANSCRIPTIONS, TRANSLATIONS, answer_usage
from workers.prices import ListPrice, RelayPrice

FAMILY = family_of(TRANSCRIPTIONS)
REF = StoredFile("ab" * 32, "clip.wav", 48_000, 61.2)


def stored(**extra: Any) -> dict[str, Any]:
    return {"model": "whisper-1", "file": REF.as_json()} | extra


def test_both_routes_are_one_family() -> None:
    assert family_of(TRANSLATIONS) is FAMILY
    assert FAMILY.name == "transcriptions"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "whisper-1"}, 'needs "file"'),
        ({"file": "a.wav", "response_format": "xml"}, '"response_format" must be one of json, text, srt'),
        ({"file": "a.wav", "temperature": 2}, '"temperature" must be a number from 0 to 1'),
        ({"file": "a.wav", "temperature": True}, '"temperature" must be a number'),
        ({"file": "a.wav", "language": 1}, '"language" must be a string'),
        ({"file": "a.wav", "timestamp_granularities[]": ["char"]}, "must be a list of"),
    ],
)
def test_check_names_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        FAMILY.check(body)


def test_a_valid_body_passes() -> None:
    FAMILY.check({"file": "a.wav", "response_format": "srt", "temperature": 0.2, "language": "en",
                  "prompt": "names", "timestamp_granularities[]": ["word", "segment"]})  # fmt: skip


def test_seconds_are_billed_whole_from_the_file_duration() -> None:
    assert FAMILY.expected_usage(stored()) == Usage(seconds=Decimal(62))
    assert FAMILY.prompt_tokens(stored()) == audio_tokens(62) == 1033  # ceil(61.2) / 60 × 1000


def test_a_file_of_unknown_duration_is_counted_from_its_size_and_flagged() -> None:
    body = stored(file=StoredFile("cd" * 32, "x.webm", 160_001).as_json())
    assert FAMILY.expected_usage(body) == Usage(seconds=Decimal(11), estimated=True)


def test_text_formats_are_stored_as_returned_and_billed_by_seconds() -> None:
    srt = b"1\n00:00:00,000 --> 00:00:02,000\nhello\n"
    request = stored(response_format="srt")
    assert FAMILY.text_answer(request)
    parsed = FAMILY.parse(request, srt)
    assert orjson.loads(parsed.body_json) == srt.decode()
    assert parsed.usage == Usage(seconds=Decimal(62))
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == srt.decode()


def test_json_answers_keep_their_own_usage() -> None:
    answer = {
        "text": "hi",
        "usage": {"type": "tokens", "input_tokens": 30, "output_tokens": 4, "total_tokens": 34},
    }
    parsed = FAMILY.parse(stored(), orjson.dumps(answer))
    assert parsed.usage == Usage(prompt_tokens=30, completion_tokens=4, total_tokens=34)
    assert FAMILY.answer_text(orjson.loads(parsed.body_json)) == "hi"
    assert FAMILY.parse(stored(), b'{"text": "hi"}').usage == Usage(seconds=Decimal(62))


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"type": "duration", "seconds": 3.2}, Usage(seconds=Decimal(4))),
        ({"input_tokens": 5}, Usage(prompt_tokens=5, total_tokens=5)),
        ({"type": "tokens", "input_tokens": 0, "output_tokens": 0}, None),
        ("nonsense", None),
    ],
)
def test_answer_usage(usage: Any, expected: Usage | None) -> None:
    assert answer_usage({"usage": usage}) == expected


def test_cost_per_minute_on_list_prices_and_as_audio_tokens_on_relay_prices() -> None:
    usage = FAMILY.expected_usage(stored())
    assert cost_of_attempt(usage, ListPrice(per_minute=Decimal("0.006"))) == Decimal("0.0062")
    # whisper-1 at new-api's ratio 15: 1033 tokens × 15 quota, 500,000 quota a dollar
    assert cost_of_attempt(usage, RelayPrice(model_ratio=Decimal(15))) == Decimal(1033 * 15) / 500_000


def test_the_form_carries_every_field_and_the_file() -> None:
    body = stored(language="en", temperature=0, timestamp_granularities=["word", "segment"])
    data, content_type = multipart(body, FAMILY.file_fields, {REF.sha256: b"RIFF....WAVE"})
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data)
    parts = {(p.get_param("name", header="content-disposition"), p.get_filename()): p.get_payload(decode=True)
             for p in message.get_payload()}  # fmt: skip
    assert parts[("file", "clip.wav")] == b"RIFF....WAVE"
    assert parts[("model", None)] == b"whisper-1"
    assert parts[("temperature", None)] == b"0"
    names = [p.get_param("name", header="content-disposition") for p in message.get_payload()]
    assert names.count("timestamp_granularities[]") == 2
    assert set(names) == {"model", "file", "language", "temperature", "timestamp_granularities[]"}
