"""Reading a request body the way the stand-in relay's answer builders take it: JSON or a form.

A JSON body is parsed as it is. A ``multipart/form-data`` body (transcription, image edits) is
parsed by aiohttp (``request.post()``) into a dict of its text fields, a field repeated or named
``x[]`` as a list under ``x[]``, and each file as ``{"filename", "content_type", "sha256",
"bytes"}`` plus ``seconds`` for audio (read with mutagen, as new-api reads the duration it
bills): answers depend on the file's content through its digest, never on its bytes. The raw
bytes a fault marker is searched in are the request's own for JSON, the text fields for a form
(a marker in a ``prompt`` forces a fault, as in a chat message).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import orjson
from aiohttp import web

from batcher.inputfiles import audio_seconds
from workers.endpoints.filefields import CONTENT_TYPES, extension


async def read_body(request: web.Request) -> tuple[bytes, Any]:
    """The bytes to search for fault markers, and the body (None when it is not JSON or a form)."""
    if request.content_type == "multipart/form-data":
        form = await request.post()
        body = _form_body(form)
        texts = [v for v in body.values() if isinstance(v, str)]
        return "\n".join(texts).encode(), body
    raw = await request.read()
    try:
        return raw, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw, None


def _form_body(form: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in dict.fromkeys(form.keys()):
        values = [_value(v) for v in form.getall(key)]
        if key.endswith("[]") or len(values) > 1:
            body[key if key.endswith("[]") else f"{key}[]"] = values
        else:
            body[key] = values[0]
    return body


def _value(value: Any) -> Any:
    if isinstance(value, web.FileField):
        with value.file as f:  # aiohttp's spooled temporary file: closed once read
            return uploaded_file(value.filename, value.content_type, f.read())
    return str(value)


def uploaded_file(filename: str, content_type: str, data: bytes) -> dict[str, Any]:
    """How an answer builder sees an uploaded file (see the module docstring)."""
    described: dict[str, Any] = {
        "filename": filename,
        "content_type": content_type,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    if CONTENT_TYPES.get(extension(filename), "").startswith("audio/"):
        described["seconds"] = audio_seconds(io.BytesIO(data))
    return described
