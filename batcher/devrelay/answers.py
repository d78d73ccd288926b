"""The dev relay's answers: pure functions from a request body to the exact response and usage.

Integration tests import these to check that each stored result belongs to its request line,
so every answer depends on the body alone (ids derive from the body; only ``created`` varies).
The token count is the relay's own billing count, deliberately unlike any client estimate.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from typing import Any

import orjson

AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
"""Speech ``response_format`` → Content-Type."""

Usage = dict[str, int]

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_MAX_DIM = 4096


class InvalidBody(ValueError):
    """Raised when a request body has the wrong shape; the relay answers 400 and it never escapes."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()[:12]


def body_key(body: dict[str, Any]) -> str:
    """A stable key for a request body: the first 16 hex of the sha256 of its canonical JSON."""
    return hashlib.sha256(_canonical(body)).hexdigest()[:16]


def count_tokens(text: str) -> int:
    """The relay's billing count: whitespace-separated words plus CJK characters, at least 1.

    Deliberately unlike any client estimate, so tests can tell whose count was stored.
    """
    return max(1, len(text.split()) + len(_CJK.findall(text)))


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "\n".join(t for t in parts if isinstance(t, str))
    return ""


def _flat_text(value: Any) -> str:
    """A prompt or input as one string; token ids become words, so their count is their length."""
    if isinstance(value, list):
        return " ".join(_flat_text(v) for v in value)
    return str(value)


def _with_index(content: str, n: int) -> list[str]:
    return [content if i == 0 else f"{content} #{i}" for i in range(n)]


def expected_chat_content(body: dict[str, Any]) -> str:
    """The content of choice 0: a digest of all messages, then the last message's text."""
    messages = body["messages"]
    return f"echo {_digest(messages)}: {message_text(messages[-1].get('content'))[:200]}"


def expected_chat_contents(body: dict[str, Any]) -> list[str]:
    """The content of every choice: choice i ≥ 1 gets ``" #i"`` appended."""
    return _with_index(expected_chat_content(body), _int_field(body, "n", 1))


def expected_completion_text(body: dict[str, Any]) -> str:
    """The text of choice 0: a digest of the prompt, then the prompt itself (token ids as words)."""
    prompt = body["prompt"]
    return f"echo {_digest(prompt)}: {_flat_text(prompt)[:200]}"


def expected_embedding(text_or_tokens: str | list[int], dim: int = 8) -> list[float]:
    """``dim`` floats in [-1, 1] from the sha256 of the input, exact in float32."""
    seed = _canonical(text_or_tokens)
    raw = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range((dim + 7) // 8))
    ints = struct.unpack(f">{dim}I", raw[: 4 * dim])
    halfway = [x / 2**31 - 1.0 for x in ints]
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *halfway)))


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def _is_prompt_list(value: Any) -> bool:
    """An array of strings, one token array, or an array of token arrays."""
    if not isinstance(value, list) or not value:
        return False
    return _is_tokens(value) or all(isinstance(v, str) or _is_tokens(v) for v in value)


def embedding_inputs(value: Any) -> list[str | list[int]]:
    """One entry per embedding the ``input`` field asks for, in order."""
    if isinstance(value, str):
        return [value]
    if _is_tokens(value):
        return [value]
    if _is_prompt_list(value):
        return list(value)
    raise InvalidBody("'input' must be a string, an array of strings or of token arrays", "input")


AUDIO_SIGNATURES = {
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "opus": b"OggS\x00\x02\x00\x00",
    "aac": b"\xff\xf1\x50\x80",
    "flac": b"fLaC\x00\x00\x00\x22",
    "wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "pcm": b"",
}
"""The first bytes of each format, so the fake audio passes a client's format check."""


def expected_audio(body: dict[str, Any]) -> bytes:
    """Fake audio: the format's signature, a label, then sha256 bytes, 16 bytes per input character."""
    text, voice, fmt = body["input"], body.get("voice", "alloy"), body.get("response_format", "mp3")
    digest = hashlib.sha256(_canonical([text, voice, fmt])).digest()
    length = 64 + 16 * len(text)
    head = AUDIO_SIGNATURES.get(str(fmt), b"") + b"FAKEAUDIO " + str(fmt).encode() + b"\n"
    return head + (digest * (length // 32 + 1))[:length]


def audio_content_type(body: dict[str, Any]) -> str:
    """The Content-Type of the speech answer, by ``response_format`` (mp3 by default)."""
    return AUDIO_TYPES[body.get("response_format", "mp3")]


# --- Answer builders: a valid body in, (payload, usage) out ----------------------------------


def _int_field(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidBody(f"'{name}' must be a positive integer (got {value!r})", name)
    return value


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBody("you must provide a model parameter", "model")
    return model


def _cap(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return _int_field(body, name, 1)
    return None


def _usage(prompt: int, completion: int) -> Usage:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _choices(texts: list[str], cap: int | None) -> tuple[list[tuple[str, str]], int]:
    """Each text with its finish_reason, and the completion tokens billed (capped per choice)."""
    out, billed = [], 0
    for text in texts:
        tokens = count_tokens(text)
        if cap is not None and tokens > cap:
            out.append((text, "length"))
            tokens = cap
        else:
            out.append((text, "stop"))
        billed += tokens
    return out, billed


def chat_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The chat.completion object for a body, and its usage."""
    _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise InvalidBody("'messages' must be a non-empty array of message objects", "messages")
    choices, completion = _choices(expected_chat_contents(body), _cap(body))
    prompt = sum(count_tokens(message_text(m.get("content"))) + 3 for m in messages)
    usage = _usage(prompt, completion)
    rows = [
        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        for i, (text, finish) in enumerate(choices)
    ]
    return _envelope("chatcmpl", "chat.completion", body, choices=rows, usage=usage), usage


def completion_answer(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """The text_completion object for a body, and its usage."""
    _require_model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) and not _is_prompt_list(prompt):
        raise InvalidBody("'prompt' must be a string, an array of strings or of token arrays", "prompt")
    texts = _with_index(expected_completion_text(body), _int_field(body, "n", 1))
    choices, completion = _choices(texts, _cap(body))
    usage = _usage(count_tokens(_flat_text(prompt)), completion)
    rows = [
        {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
        for i, (text, finish) in enumerate(choices)
    ]
    return _envelope("cmpl", "text_completion", body, choices=rows, usage=usage), usage


def _envelope(
    prefix: str, obj: str, body: dict[str, Any], *, choices: list[Any], usage: Usage
) -> dict[str, Any]:
    # The id derives from the body so that repeated calls give identical answers.
    return {
        "id": f"{prefix}-{body_key(body)}",
        "object": obj,
        "created": int(time.time()),
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }


def embedding_answer(body: dict[str, Any], default_dim: int) -> tuple[dict[str, Any], Usage]:
    """The embeddings list object for a body (float or base64), and its usage."""
    model = _require_model(body)
    inputs = embedding_inputs(body.get("input"))
    dim = _int_field(body, "dimensions", default_dim)
    fmt = body.get("encoding_format") or "float"
    if dim > _MAX_DIM or fmt not in ("float", "base64"):
        raise InvalidBody("'dimensions' or 'encoding_format' is out of range", "encoding_format")
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(expected_embedding(x, dim), fmt)}
        for i, x in enumerate(inputs)
    ]
    prompt = sum(len(x) if isinstance(x, list) else count_tokens(x) for x in inputs)
    usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    return {"object": "list", "data": data, "model": model, "usage": usage}, usage


def _encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def speech_answer(body: dict[str, Any]) -> tuple[bytes, Usage]:
    """The audio bytes for a body; the relay bills characters."""
    _require_model(body)
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise InvalidBody("'input' must be a non-empty string", "input")
    if not isinstance(body.get("voice", "alloy"), str):
        raise InvalidBody("'voice' must be a string", "voice")
    if body.get("response_format", "mp3") not in AUDIO_TYPES:
        raise InvalidBody(f"'response_format' must be one of {', '.join(AUDIO_TYPES)}", "response_format")
    return expected_audio(body), {"characters": len(text)}
