"""Is a speech answer audio? Gateways have sent an upstream's JSON error as ``200 audio/mpeg``.

A 2xx speech answer is accepted only when its body is audio of the format the line asked for:

- a body that parses as JSON is never audio: it is classified as the JSON answer it is (an error
  inside a 200, a quota error, ...), whatever its ``content-type`` says;
- a body shorter than ``MIN_AUDIO_BYTES`` is not a clip (a container header alone is longer);
- the first bytes must be the format's signature (ID3 or an MPEG frame for mp3, ``OggS`` for
  opus, ``fLaC``, ``RIFF…WAVE``, an ADTS frame or an MP4 ``ftyp`` box for aac). ``pcm`` is raw
  samples with no header, so only the two checks above apply to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson

from workers.client import RawResponse
from workers.endpoints import family_of
from workers.endpoints.sse import classify_stream
from workers.retry import Classification, Verdict, classify_response
from workers.units import Unit

MIN_AUDIO_BYTES = 12  # RIFF....WAVE, the shortest header checked below


def _mp3(head: bytes) -> bool:
    return head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _aac(head: bytes) -> bool:
    adts = len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0
    return adts or head.startswith(b"ADIF") or head[4:8] == b"ftyp"


def _opus(head: bytes) -> bool:
    return head.startswith(b"OggS")


def _flac(head: bytes) -> bool:
    return head.startswith(b"fLaC")


def _wav(head: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == b"WAVE"


_SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "mp3": _mp3,
    "opus": _opus,
    "flac": _flac,
    "wav": _wav,
    "aac": _aac,
}


def audio_problem(body: bytes, fmt: str) -> str | None:
    """Why the body is not ``fmt`` audio, or None when it looks like it."""
    if len(body) < MIN_AUDIO_BYTES:
        return f"a {len(body)}-byte body is too short to be {fmt} audio"
    check = _SIGNATURES.get(fmt)
    if check is not None and not check(body[:16]):
        return f"the body does not start like {fmt} audio ({body[:8]!r})"
    return None


def _is_json(body: bytes) -> bool:
    start = body[:1]
    if start not in (b"{", b"[", b" ", b"\n", b"\r", b"\t"):
        return False
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def classify_speech(
    status: int, headers: Mapping[str, str], body: bytes, *, fmt: str, now: float
) -> Classification:
    """``classify_response`` for a speech answer, with the audio checks of the module docstring."""
    if not 200 <= status < 300:
        return classify_response(status, headers, body, now=now)
    if _is_json(body):
        c = classify_response(status, headers, body, now=now)
        if c.verdict != Verdict.OK:
            return c
        return Classification(Verdict.RETRY, "bad_body", f"{status} with a JSON body, not audio", sent=True)
    c = classify_response(status, headers, body, now=now, binary_ok=True)
    if c.verdict != Verdict.OK:
        return c
    problem = audio_problem(body, fmt)
    if problem is None:
        return c
    return Classification(Verdict.RETRY, "bad_body", f"{status} answer is not audio: {problem}", sent=True)


def classify_answer(unit: Unit, response: RawResponse, *, now: float) -> Classification:
    """What an answer means for the unit's lines: audio checked as above for file answers."""
    status, headers, body = response.status, response.headers, response.content
    family = family_of(unit.endpoint)
    if family.text_answer(unit.requests[0]):  # a transcript as text, SRT or VTT: any 2xx body but JSON
        return classify_response(status, headers, body, now=now, binary_ok=not _is_json(body))
    if family.binary_answer:
        return classify_speech(status, headers, body, fmt=family.file_format(unit.requests[0]), now=now)
    if family.streamed(unit.requests[0]):
        return classify_stream(status, headers, body, now=now)
    return classify_response(status, headers, body, now=now)
