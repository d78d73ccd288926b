"""The stand-in relay's answers for audio in and images: pure functions of the request's fields.

Like ``batcher.devrelay.answers``, every answer depends on the request alone (an uploaded file
through its sha256, ``batcher.devrelay.forms``), so tests can check each stored result against
its line.

Transcription bills as new-api does: the upload's duration, ``ceil(seconds)``; models named
``gpt-4o…`` answer with their own token ``usage`` (gpt-4o-transcribe's), the others with none,
so the client counts the seconds itself.
"""

from __future__ import annotations

import math
from typing import Any

from batcher.devrelay.answers import InvalidBody, Usage, count_tokens
from workers.cost import audio_tokens

TEXT = "text/plain"
JSON = "application/json"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _file(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, dict) or "sha256" not in value:
        raise InvalidBody(f"'{name}' must be an uploaded file", name)
    return value


def transcript_seconds(body: dict[str, Any]) -> int:
    """The whole seconds the relay bills for the uploaded audio (1 when it cannot tell)."""
    seconds = _file(body, "file").get("seconds")
    return math.ceil(seconds) if isinstance(seconds, int | float) and seconds > 0 else 1


def expected_transcript(body: dict[str, Any], task: str = "transcribe") -> str:
    """The transcript's text: the task, the audio's digest and name, the language and prompt."""
    upload = _file(body, "file")
    words = [task, upload["sha256"][:12], str(upload.get("filename")), str(body.get("language", "auto"))]
    if body.get("prompt"):
        words.append(str(body["prompt"])[:100])
    return " ".join(words)


def _clock(seconds: int, sep: str) -> str:
    return f"00:{seconds // 60:02d}:{seconds % 60:02d}{sep}000"


def transcription_answer(body: dict[str, Any], *, task: str) -> tuple[dict[str, Any] | bytes, Usage, str]:
    """The answer in the asked ``response_format``, what the relay bills, and its content type."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBody("you must provide a model parameter", "model")
    fmt = body.get("response_format", "json")
    if fmt not in FORMATS:
        raise InvalidBody(f"'response_format' must be one of {', '.join(FORMATS)}", "response_format")
    text, seconds = expected_transcript(body, task), transcript_seconds(body)
    tokens = model.startswith("gpt-4o")
    usage: Usage = {"seconds": seconds} if not tokens else _token_usage(seconds, text)
    end = max(seconds, 1)
    if fmt == "text":
        return text.encode(), usage, TEXT
    if fmt == "srt":
        return f"1\n{_clock(0, ',')} --> {_clock(end, ',')}\n{text}\n".encode(), usage, TEXT
    if fmt == "vtt":
        return f"WEBVTT\n\n{_clock(0, '.')} --> {_clock(end, '.')}\n{text}\n".encode(), usage, TEXT
    answer: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        segment = {"id": 0, "start": 0.0, "end": float(end), "text": text}
        answer = {"task": task, "language": body.get("language", "english"), "duration": float(end)} | answer
        answer["segments"] = [segment]
        if "word" in body.get("timestamp_granularities[]", []):
            answer["words"] = [{"word": w, "start": 0.0, "end": float(end)} for w in text.split()]
    if tokens:
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        answer["usage"] = {
            "type": "tokens",
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return answer, usage, JSON


def _token_usage(seconds: int, text: str) -> Usage:
    prompt, completion = audio_tokens(seconds), count_tokens(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# --- Sample files: what tests and ``scripts/example_media.py`` upload --------------------------


def sample_wav(seconds: float, *, rate: int = 8000, tone: int = 440) -> bytes:
    """A mono 16-bit WAV of a sine tone lasting ``seconds`` (mutagen reads its duration)."""
    import io
    import struct
    import wave

    frames = int(seconds * rate)
    samples = (int(8000 * math.sin(2 * math.pi * tone * i / rate)) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()


# --- Images ---------------------------------------------------------------------------------

UNFETCHABLE = "[[unfetchable]]"  # in a prompt: the answer's URL answers 404
IMAGE_OUTPUT_TOKENS = 272  # gpt-image-1's output tokens for a low-quality 1024² image


def sample_png(seed: str, *, side: int = 4) -> bytes:
    """A tiny RGB PNG whose pixels come from the sha256 of ``seed`` (zlib and struct only)."""
    import hashlib
    import struct
    import zlib

    pixels = (hashlib.sha256(seed.encode()).digest() * 2)[: side * 3]
    raw = b"".join(b"\x00" + pixels for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def image_seed(body: dict[str, Any], task: str) -> str:
    """What an image answer derives from: the task, prompt, model, size, quality and uploads."""
    from batcher.devrelay.answers import body_key

    uploads = [v.get("sha256") for k, v in sorted(body.items()) if isinstance(v, dict)]
    uploads += [
        u.get("sha256") for v in body.values() if isinstance(v, list) for u in v if isinstance(u, dict)
    ]
    keys = ("prompt", "model", "size", "quality", "style")
    return f"{task}-" + body_key({"fields": {k: body.get(k) for k in keys}, "uploads": uploads})


def expected_image(body: dict[str, Any], task: str, index: int) -> bytes:
    """The image ``index`` of an answer, whether it was sent as base64 or as a URL."""
    return sample_png(f"{image_seed(body, task)}-{index}")


def image_count(body: dict[str, Any]) -> int:
    """``n`` of a JSON or form body (a form sends it as text)."""
    try:
        n = int(body.get("n", 1))
    except (TypeError, ValueError):
        raise InvalidBody("'n' must be a positive integer", "n") from None
    if n < 1:
        raise InvalidBody("'n' must be a positive integer", "n")
    return n


def image_answer(body: dict[str, Any], *, task: str, origin: str) -> tuple[dict[str, Any], Usage, str]:
    """The images (base64 for ``b64_json`` and gpt-image models, else URLs on ``origin``)."""
    import base64

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBody("you must provide a model parameter", "model")
    prompt = body.get("prompt")
    if task != "variation" and (not isinstance(prompt, str) or not prompt):
        raise InvalidBody("'prompt' must be a non-empty string", "prompt")
    if task != "generation":
        _file(body, "image" if "image" in body else "image[]")
    n, seed, tokens = image_count(body), image_seed(body, task), model.startswith("gpt-image")
    as_b64 = tokens or body.get("response_format") == "b64_json"
    missing = "missing-" if isinstance(prompt, str) and UNFETCHABLE in prompt else ""
    data = [
        {"b64_json": base64.b64encode(sample_png(f"{seed}-{i}")).decode()}
        if as_b64
        else {"url": f"{origin}/_files/{missing}{seed}-{i}.png"}
        for i in range(n)
    ]
    usage: Usage = {"images": n}
    answer: dict[str, Any] = {"created": 1_700_000_000, "data": data}
    if tokens:
        prompt_tokens, output = count_tokens(str(prompt or "")), IMAGE_OUTPUT_TOKENS * n
        usage |= {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output,
            "total_tokens": prompt_tokens + output,
        }
        answer["usage"] = {"input_tokens": prompt_tokens, "output_tokens": output,
                           "total_tokens": prompt_tokens + output}  # fmt: skip
    return answer, usage, JSON


class NotImplementedRoute(InvalidBody):
    """new-api's 501 for ``/v1/images/variations``: the route exists in OpenAI's API, not here."""

    status = 501
    payload = (
        b'{"error":{"message":"API not implemented","type":"new_api_error","param":"",'
        b'"code":"api_not_implemented"}}'
    )


def variation_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage, str]:
    """new-api answers every variation request with a 501 (``NotImplementedRoute``)."""
    raise NotImplementedRoute("API not implemented")


def served_image(name: str) -> bytes | None:
    """The PNG an image URL of the relay serves (``/_files/NAME``), or None (404)."""
    if name.startswith("missing-") or not name.endswith(".png"):
        return None
    return sample_png(name.removesuffix(".png"))
