"""The bodies a task line sends besides its own: follow-ups, modal steps, images as ``data:`` URLs.

- A follow-up (``"after": "cat-1"``) takes its origin's task id and, with ``"button": "U2"``,
  the button's ``customId`` (from the origin's stored result, ``buttons``); its family puts them
  in the submit (``TaskFamily.follow_up``: MJ's ``taskId``/``customId``, Luma's extend route).
- A modal step (``/mj/submit/modal``) sends ``taskId``, the line's ``"modal"`` fields (``prompt``,
  CustomZoom's ``--ar``/``--zoom`` in it) and the line's ``maskBase64`` (Vary (Region)).
- Stored file references (``jobs.blobs.StoredFile``) become ``data:<type>;base64,...`` at call
  time: the relay takes images inline, never as uploads.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from jobs.blobs import BlobReader, StoredFile
from jobs.errors import BlobMissing
from jobs.models import RequestState
from jobs.store.tasks import OriginLine
from workers.endpoints.filefields import CONTENT_TYPES, extension
from workers.endpoints.taskfamily import AFTER, BUTTON, FollowUp

MODAL = "modal"
MASK = "maskBase64"


def follow_up_of(body: dict[str, Any], origin: OriginLine | None) -> FollowUp | str | None:
    """The follow-up of a line, None while its origin is going, or why it cannot be sent."""
    after = str(body[AFTER])
    if origin is None:
        return f'"{AFTER}" names "{after}", which is no line of this job; name the custom_id of its origin'
    if origin.state in (RequestState.PENDING, RequestState.RUNNING):
        return None
    label = body.get(BUTTON)
    if origin.state != RequestState.SUCCEEDED:
        pressed = f"button {label} cannot be pressed" if label else "it cannot be followed"
        return f'its origin "{after}" {origin.state}, so {pressed}'
    result = orjson.loads(origin.response_body or "{}")
    if label is None:
        return FollowUp(str(result["task_id"]))
    buttons: dict[str, str] = result.get("buttons") or {}
    custom_id = buttons.get(str(label)) or next((c for c in buttons.values() if c == label), None)
    if custom_id is None:
        shown = ", ".join(buttons) or "none"
        return f'"{after}" has no button "{label}" (its buttons: {shown})'
    return FollowUp(str(result["task_id"]), custom_id)


def modal_body(line: dict[str, Any], task_id: str) -> dict[str, Any] | str:
    """The ``/mj/submit/modal`` body for a task waiting on a modal, or what the line must add."""
    fields = line.get(MODAL)
    if not isinstance(fields, dict):
        return (
            "the relay asks for a modal step (Vary (Region), Custom Zoom, remix): add "
            '"modal": {"prompt": "..."} to the line (and "maskBase64" for Vary (Region)) and submit it again'
        )
    body = {"taskId": task_id, **fields}
    if MASK in line:
        body[MASK] = line[MASK]
    return body


def stored_to_data_urls(body: dict[str, Any], blobs: BlobReader | None) -> dict[str, Any]:
    """The body with every stored file reference replaced by its ``data:`` URL."""
    return {key: _inline(value, blobs) for key, value in body.items()}


def _inline(value: Any, blobs: BlobReader | None) -> Any:
    if isinstance(value, list):
        return [_inline(v, blobs) for v in value]
    stored = StoredFile.from_json(value)
    if stored is None and isinstance(value, dict):  # a file in an object (Runway's options.init_image)
        return {key: _inline(v, blobs) for key, v in value.items()}
    if stored is None:
        return value
    if blobs is None:
        raise BlobMissing("this engine has no blob store to read the line's images from")
    kind = CONTENT_TYPES.get(extension(stored.name), "application/octet-stream")
    return f"data:{kind};base64," + base64.b64encode(blobs(stored.sha256)).decode()
