"""Speech (``/v1/audio/speech``): text in, an audio file out, billed per input character.

The store keeps the audio file's path, size and format, not the bytes; the usage is the input's
character count (that is how TTS is billed), and estimates count characters, not tokens.
"""

from __future__ import annotations

from typing import ClassVar

from jobs.endpoints import Endpoint
from jobs.records import Usage
from workers.endpoints.base import Body, BodyError, Family

SPEECH = Endpoint("/v1/audio/speech")

AUDIO_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class Speech(Family):
    """``/v1/audio/speech``."""

    paths: ClassVar[tuple[str, ...]] = (SPEECH.path,)
    name: ClassVar[str] = "speech"
    binary_answer: ClassVar[bool] = True
    billed_in: ClassVar[str] = "characters"

    def repeatable(self, body: Body) -> bool | None:
        return None  # the answer is an audio file beside the store, not a row in it

    def check(self, body: Body) -> None:
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BodyError('speech needs "input": the non-empty text to speak')
        if not isinstance(body.get("voice"), str | dict):
            raise BodyError('speech needs "voice", e.g. "alloy"')

    def prompt_tokens(self, body: Body) -> int:
        """The input's characters: what the limiter reserves and what speech is billed by."""
        return characters(body)

    def expected_usage(self, body: Body, *, default: int | None = None) -> Usage:
        return Usage(characters=characters(body))

    def file_format(self, request: Body) -> str:
        """The audio format the request asked for (mp3 when unset or unknown)."""
        value = request.get("response_format")
        return value if isinstance(value, str) and value in AUDIO_FORMATS else "mp3"

    def file_usage(self, request: Body) -> Usage:
        """Speech is billed per input character."""
        return Usage(characters=characters(request))


def characters(body: Body) -> int:
    """The characters of the text to speak."""
    text = body.get("input")
    return len(text) if isinstance(text, str) else 0
