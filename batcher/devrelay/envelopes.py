"""Error envelopes of the native routes: what a refusal looks like on ``/v1/messages`` and ``/v1beta``.

The stand-in relay builds every error in OpenAI's shape (``{"error": {"message", "type", "code"}}``)
and ``native_envelope`` rewraps it for the route it answers, as new-api does for its Claude and
Gemini relay modes:

- ``/v1/messages``: Anthropic's ``{"type": "error", "error": {"type", "message"}}``; the type is
  the relay's own (``invalid_request_error``, ``new_api_error``), except a 401, which Anthropic
  calls ``authentication_error``;
- ``/v1beta/...``: Google's ``{"error": {"code": <status>, "message", "status": "INVALID_ARGUMENT"}}``.

A body already in the route's shape (the ``overloaded529`` fault) and a body that is not an
OpenAI-shaped error (an HTML page, plain text) are kept as they are.
"""

from __future__ import annotations

import orjson

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def anthropic_error(kind: str, message: str) -> bytes:
    """Anthropic's error envelope."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def google_error(status: int, message: str) -> bytes:
    """Google's error envelope (``google.rpc.Status`` as JSON)."""
    state = GOOGLE_STATUS.get(status, "UNKNOWN")
    return orjson.dumps({"error": {"code": status, "message": message, "status": state}})


def native_envelope(path: str, status: int, body: bytes) -> bytes:
    """The error ``body`` (OpenAI's shape) as the route ``path`` answers it; other bodies unchanged."""
    native = path == "/v1/messages" or path.startswith("/v1beta/")
    error = _openai_error(body) if native and status >= 400 else None
    if error is None:
        return body
    message = str(error.get("message") or "")
    if path == "/v1/messages":
        kind = "authentication_error" if status == 401 else str(error.get("type") or "api_error")
        return anthropic_error(kind, message)
    return google_error(status, message)


def _openai_error(body: bytes) -> dict[str, object] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") == "error" or not isinstance(data.get("error"), dict):
        return None
    error: dict[str, object] = data["error"]
    return None if "status" in error else error
