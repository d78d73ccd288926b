"""A streamed Claude answer assembled into the ``message`` a non-streamed call returns.

``message_start`` carries the message (and the input side of the usage), each
``content_block_start`` / ``content_block_delta`` builds a block (text, thinking, a tool call's
JSON input), ``message_delta`` the stop reason and the output usage; ``message_stop`` ends it,
and a stream without it was cut. No family is defined here.
"""

from __future__ import annotations

from typing import Any

import orjson

from workers.endpoints.sse import StreamCut, events

_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}


def assemble_claude(content: bytes) -> dict[str, Any]:
    """The message of a streamed ``/v1/messages`` answer; ``StreamCut`` without ``message_stop``."""
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    stopped = False
    for event in events(content):
        data = event.json()
        kind = data.get("type") or event.name
        if kind == "message_start":
            message = dict(data.get("message") or {})
        elif kind == "content_block_start":
            blocks[int(data.get("index") or 0)] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            _add_delta(
                blocks.setdefault(int(data.get("index") or 0), {}), data.get("delta") or {}, partial, data
            )
        elif kind == "message_delta" and message is not None:
            message.update(data.get("delta") or {})
            message["usage"] = (message.get("usage") or {}) | (data.get("usage") or {})
        elif kind == "message_stop":
            stopped = True
    if message is None or not stopped:
        raise StreamCut("the stream ended before message_stop")
    for index, text in partial.items():
        blocks[index]["input"] = orjson.loads(text) if text else {}
    message["content"] = [block for _, block in sorted(blocks.items())]
    return message


def _add_delta(
    block: dict[str, Any], delta: dict[str, Any], partial: dict[int, str], data: dict[str, Any]
) -> None:
    kind = delta.get("type")
    if kind in _DELTA_TEXT:
        key = _DELTA_TEXT[kind]
        block[key] = block.get(key, "") + str(delta.get(key) or "")
    elif kind == "input_json_delta":
        index = int(data.get("index") or 0)
        partial[index] = partial.get(index, "") + str(delta.get("partial_json") or "")
