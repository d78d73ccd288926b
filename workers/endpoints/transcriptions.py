"""Transcription and translation (``/v1/audio/transcriptions``, ``/translations``): audio in, text out.

The call is multipart: the line's ``"file"`` (stored at ingest, ``jobs.blobs``) and every other
field as a form field (``model``, ``language``, ``prompt``, ``response_format``,
``temperature``, ``timestamp_granularities[]``: passed through as given).

Billing follows the relays. new-api counts the uploaded audio's duration, ``ceil(seconds) / 60 ×
1000`` tokens × the model ratio (``workers.cost.audio_tokens``), unless the answer reports a
``usage`` of its own: gpt-4o-transcribe's ``{"input_tokens", "output_tokens"}`` are used as
tokens, whisper-1's ``{"type": "duration", "seconds"}`` as seconds. A line's usage is therefore
``seconds`` (whole seconds, rounded up: what a relay bills) unless its answer gave tokens. The
duration comes from the file's headers at ingest (``batcher.inputfiles``); a file whose length
could not be read is counted at ``ASSUMED_BYTES_PER_SECOND`` (128 kbit/s) and its usage flagged as estimated.

The answer is stored as returned: JSON formats as the JSON object, ``text`` / ``srt`` / ``vtt``
as one JSON string holding the text exactly, which exports show as the line's text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from jobs.blobs import stored_files
from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.cost import audio_tokens
from workers.endpoints.base import (
    Body,
    BodyError,
    Family,
    ParsedAnswer,
    positive_int,
    type_name,
)
from workers.endpoints.filefields import AUDIO_FILE, FileRule, file_seconds

TRANSCRIPTIONS = Endpoint("/v1/audio/transcriptions")
TRANSLATIONS = Endpoint("/v1/audio/translations")
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TEXT_FORMATS = ("text", "srt", "vtt")
GRANULARITIES = ("word", "segment")
ASSUMED_BYTES_PER_SECOND = 16_000  # 128 kbit/s, for audio whose duration its headers do not give


class Transcriptions(Family):
    """``/v1/audio/transcriptions`` and ``/v1/audio/translations``."""

    paths: ClassVar[tuple[str, ...]] = (TRANSCRIPTIONS.path, TRANSLATIONS.path)
    name: ClassVar[str] = "transcriptions"
    billed_in: ClassVar[str] = "seconds"
    file_fields: ClassVar[Mapping[str, FileRule]] = {"file": AUDIO_FILE}

    def check(self, body: Body) -> None:
        if "file" not in body:
            raise BodyError(
                'transcription needs "file": the audio\'s path (relative to the input file) or a data: URL'
            )
        fmt = body.get("response_format")
        if fmt is not None and fmt not in RESPONSE_FORMATS:
            raise BodyError(f'"response_format" must be one of {", ".join(RESPONSE_FORMATS)} (got {fmt!r})')
        temperature = body.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 1
        ):
            raise BodyError(f'"temperature" must be a number from 0 to 1 (got {temperature!r})')
        for key in ("language", "prompt"):
            if key in body and not isinstance(body[key], str):
                raise BodyError(f'"{key}" must be a string (got {type_name(body[key])})')
        _check_granularities(body)

    # --- before the call ------------------------------------------------------------------------

    def prompt_tokens(self, body: Body) -> int:
        """new-api's audio tokens, what a relay's TPM limit counts: ceil(seconds) / 60 × 1000."""
        return audio_tokens(billed_seconds(body)[0])

    def completion_tokens(self, body: Body, *, default: int | None = None) -> int | None:
        return 0

    def expected_usage(self, body: Body, *, default: int | None = None) -> Usage:
        seconds, estimated = billed_seconds(body)
        return Usage(seconds=Decimal(seconds), estimated=estimated)

    # --- the answer -----------------------------------------------------------------------------

    def text_answer(self, request: Body) -> bool:
        return request.get("response_format") in TEXT_FORMATS

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        """The answer as returned (text formats as one JSON string), and what the call is billed."""
        if self.text_answer(request):
            text = content.decode("utf-8", "replace")
            return ParsedAnswer(orjson.dumps(text).decode(), self.expected_usage(request))
        body = orjson.loads(content)
        if not isinstance(body, dict):
            raise ValueError(f"a transcription answer must be a JSON object (got {type_name(body)})")
        return ParsedAnswer(orjson.dumps(body).decode(), answer_usage(body) or self.expected_usage(request))

    def answer_text(self, answer: Body | str) -> str | None:
        if isinstance(answer, str):
            return answer
        text = answer.get("text")
        return text if isinstance(text, str) else None


def _check_granularities(body: Body) -> None:
    for key in ("timestamp_granularities", "timestamp_granularities[]"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(v in GRANULARITIES for v in value):
            raise BodyError(f'"{key}" must be a list of "word" and/or "segment" (got {value!r})')


def billed_seconds(body: Body) -> tuple[int, bool]:
    """The whole seconds a relay bills for the body's audio, and whether they were estimated."""
    seconds = file_seconds(body, Transcriptions.file_fields)
    if seconds is not None:
        return math.ceil(seconds), False
    size = sum(f.size for f in stored_files(body.get("file")))
    return max(1, math.ceil(size / ASSUMED_BYTES_PER_SECOND)), True


def answer_usage(answer: Mapping[str, Any]) -> Usage | None:
    """The usage a transcription answer reports: tokens (gpt-4o-transcribe) or seconds (whisper-1)."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = positive_int(usage.get("input_tokens")), positive_int(usage.get("output_tokens"))
    if prompt or completion:
        total = positive_int(usage.get("total_tokens")) or (prompt or 0) + (completion or 0)
        return Usage(prompt_tokens=prompt or 0, completion_tokens=completion or 0, total_tokens=total)
    seconds = usage.get("seconds")
    if usage.get("type") == "duration" and isinstance(seconds, int | float) and seconds > 0:
        return Usage(seconds=Decimal(math.ceil(seconds)))
    return None
