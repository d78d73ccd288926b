"""The OpenAI Batch output lines, byte for byte: every kind of line an export writes.

The expected bytes are what the per-line writer before ``BatchOutput`` (``batcher.export``'s
``jsonl_line`` up to 609f504) wrote for the same lines.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from batcher.batch_output import JSONL_COLUMNS, BatchOutput
from jobs.store import ResultPage
from jobs.vectors import VectorEncoding

_VALUES = struct.pack("<6f", 0.5, -1.25, 3.0, 0.1, 1e-45, -0.0)
BLOCKS = {7: (_VALUES, 3, VectorEncoding.FLOAT), 9: (_VALUES, 2, VectorEncoding.BASE64)}
_NONE = dict.fromkeys((*JSONL_COLUMNS, "vector_block", "vector_start", "vector_count"))
_BASE = _NONE | {"status_code": 200, "upstream_request_id": "req_1", "cached": False}
EMB = '{"object":"list","data":[{"object":"embedding","index":0}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}'
EMB2 = (
    '{"object":"list","data":[{"object":"embedding","index":0},{"object":"embedding","index":1}],'
    '"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}'
)
CHAT = '{"choices":[{"message":{"content":"h\u00e9"}}]}'
LINES: list[dict[str, Any]] = [
    {"custom_id": "a", "state": "succeeded", "response_body": EMB, "vector_block": 7, "vector_start": 0, "vector_count": 1},
    {"custom_id": "b", "state": "succeeded", "response_body": EMB, "vector_block": 7, "vector_start": 1, "vector_count": 1,
     "cached": True},
    {"custom_id": "c", "state": "succeeded", "response_body": EMB2, "vector_block": 9, "vector_start": 1, "vector_count": 2,
     "upstream_request_id": "req_2"},
    {"custom_id": 'q"\\\u00e9\n\u2028', "state": "succeeded", "response_body": CHAT, "upstream_request_id": None,
     "cached": True},
    {"custom_id": "e", "state": "failed", "status_code": 400, "response_body": '{"error":{"message":"bad"}}',
     "error_code": "bad", "last_error": 'no "way"'},
    {"custom_id": "f", "state": "failed", "status_code": None, "upstream_request_id": None, "error_code": "timeout"},
    {"custom_id": "g", "state": "cancelled", "status_code": None, "upstream_request_id": None},
    {"custom_id": "h", "state": "succeeded", "audio_path": "/r/\u00e9.wav", "audio_format": "wav", "audio_bytes": 1234},
]  # fmt: skip
EXPECTED = [
    b'{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"req_1","body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1.25,3.0]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}},"error":null}\n',
    b'{"id":"batch_req_2","custom_id":"b","response":{"status_code":200,"request_id":"req_1","body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.10000000149011612,1.401298464324817e-45,-0.0]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}},"error":null,"cached":true}\n',
    b'{"id":"batch_req_3","custom_id":"c","response":{"status_code":200,"request_id":"req_2","body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AABAQM3MzD0="},{"object":"embedding","index":1,"embedding":"AQAAAAAAAIA="}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}},"error":null}\n',
    b'{"id":"batch_req_4","custom_id":"q\\"\\\\\xc3\xa9\\n\xe2\x80\xa8","response":{"status_code":200,"request_id":null,"body":{"choices":[{"message":{"content":"h\xc3\xa9"}}]}},"error":null,"cached":true}\n',
    b'{"id":"batch_req_5","custom_id":"e","response":{"status_code":400,"request_id":"req_1","body":{"error":{"message":"bad"}}},"error":{"code":"bad","message":"no \\"way\\""}}\n',
    b'{"id":"batch_req_6","custom_id":"f","response":null,"error":{"code":"timeout","message":null}}\n',
    b'{"id":"batch_req_7","custom_id":"g","response":null,"error":{"code":"cancelled","message":"the job was cancelled before this line ran"}}\n',
    b'{"id":"batch_req_8","custom_id":"h","response":{"status_code":200,"request_id":"req_1","body":{"audio_path":"/r/\xc3\xa9.wav","format":"wav","bytes":1234}},"error":null}\n',
]


def page(lines: list[dict[str, Any]], first_id: int = 1) -> ResultPage:
    rows = [_BASE | {"id": first_id + i, "line_no": first_id + i} | line for i, line in enumerate(lines)]
    return ResultPage({name: [row[name] for row in rows] for name in _NONE}, BLOCKS)


def test_every_kind_of_line_is_written_as_before() -> None:
    assert BatchOutput().lines(page(LINES)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3])
def test_pages_of_any_size_write_the_same_lines(size: int) -> None:
    """What a page keeps for the next (a block's text, a template, a request id) changes no line."""
    output = BatchOutput()
    written = [
        line
        for at in range(0, len(LINES), size)
        for line in output.lines(page(LINES[at : at + size], at + 1))
    ]
    assert written == EXPECTED


def test_a_line_read_again_out_of_order_gets_its_own_vectors() -> None:
    """The second line of a block met before its first, and the first after it."""
    order = [1, 0, 2]
    lines = BatchOutput().lines(page([LINES[i] | {"id": i + 1} for i in order]))
    assert [line.replace(b"batch_req_%d" % (i + 1), b"") for line, i in zip(lines, order, strict=True)] == [
        EXPECTED[i].replace(b"batch_req_%d" % (i + 1), b"") for i in order
    ]
