"""The OpenAI Batch output format: one JSONL line per finished line, made a page at a time.

A line looks like OpenAI's: ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``, with ``"cached": true`` after them for a line answered from the response
cache. A failed line has ``"error": {"code", "message"}`` and its last response when there was
one; a cancelled line has the error code ``cancelled``. For speech, ``body`` holds the audio
file's path, format and size. The stored response body is already compact JSON, so a line is
assembled around it without parsing it again; an embedding body gets its vectors back from the
store's float32 bytes (``batcher.vector_json``).

A page's lines are made from its columns (``jobs.store.iter_result_pages`` with ``JSONL_COLUMNS``
and the bodies): no record per line, one formatting of bytes per line, and what neighbouring lines
share (a packed call's request id and body template) made once.
"""

from __future__ import annotations

import orjson

from batcher.vector_json import BodyTemplates, VectorJson, fill
from jobs.models import RequestState
from jobs.store import ResultPage

JSONL_COLUMNS = (
    "id",
    "custom_id",
    "line_no",
    "state",
    "status_code",
    "upstream_request_id",
    "response_body",
    "audio_path",
    "audio_format",
    "audio_bytes",
    "error_code",
    "last_error",
    "cached",
)
# The columns each line's loop takes, in order.
_LOOP = ("id", "custom_id", "state", "status_code", "upstream_request_id", "cached")
_LINE = (
    b'{"id":"batch_req_%d","custom_id":%b,"response":{"status_code":%b,"request_id":%b,"body":%b},'
    b'"error":%b%b\n'
)
_NO_RESPONSE = b'{"id":"batch_req_%d","custom_id":%b,"response":null,"error":%b%b\n'
_ENDS = (b"}", b',"cached":true}')  # by ``cached``
_SUCCEEDED, _CANCELLED = RequestState.SUCCEEDED.value, RequestState.CANCELLED.value
_CANCELLED_ERROR = b'{"code":"cancelled","message":"the job was cancelled before this line ran"}'


class BatchOutput:
    """Makes the output lines of an export's pages, in order (one per export: it keeps what
    neighbouring lines share)."""

    def __init__(self) -> None:
        self.vectors = VectorJson()
        self.templates = BodyTemplates()
        self._request_id: tuple[str | None, bytes] = (None, b"null")

    def lines(self, page: ResultPage) -> list[bytes]:
        """Each line of the page as a line of output, its newline included."""
        c = page.columns
        out = []
        for i, row in enumerate(zip(*(c[name] for name in _LOOP), strict=True)):
            line_id, custom_id, state, status, request_id, cached = row
            body = self._body(page, i)
            error = b"null" if state == _SUCCEEDED else _error(state, c["error_code"][i], c["last_error"][i])
            if status is None and body is None:
                out.append(_NO_RESPONSE % (line_id, orjson.dumps(custom_id), error, _ENDS[cached]))
            else:
                status_json = b"null" if status is None else b"%d" % status
                response = (status_json, self._quoted(request_id), b"null" if body is None else body)
                out.append(_LINE % (line_id, orjson.dumps(custom_id), *response, error, _ENDS[cached]))
        return out

    def _body(self, page: ResultPage, i: int) -> bytes | None:
        """The stored response body as JSON, its vectors put back; for speech, the audio file."""
        c = page.columns
        text: str | None = c["response_body"][i]
        if c["audio_path"][i]:
            audio = {
                "audio_path": c["audio_path"][i],
                "format": c["audio_format"][i],
                "bytes": c["audio_bytes"][i],
            }
            return orjson.dumps(audio)
        if text is None:
            return None
        block = c["vector_block"][i]
        if block is None:
            return text.encode()
        start, count = c["vector_start"][i], c["vector_count"][i]
        texts = self.vectors.texts(page.blocks[block], start, start + count)
        return fill(self.templates.pieces(text, count), texts)

    def _quoted(self, request_id: str | None) -> bytes:
        """The request id as JSON (a packed call's lines share one: made once for them)."""
        if request_id != self._request_id[0]:
            self._request_id = (request_id, orjson.dumps(request_id))
        return self._request_id[1]


def _error(state: str, code: str | None, message: str | None) -> bytes:
    if state == _CANCELLED:
        return _CANCELLED_ERROR
    return orjson.dumps({"code": code, "message": message})
