"""Keys never reach the store or an export, whatever field a relay echoes them in (issue 11, 1-2)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp import web
from sqlmodel import select

from jobs.db import Store
from jobs.models import Attempt, Request
from tests.helpers import batch_line, invoke, write_jsonl
from tests.loopback import Loopback

KEY = "canary-1234567890abcdef"  # no sk- prefix
MASKED = "cana****cdef"


async def echoing(request: web.Request) -> web.Response:
    """A relay that echoes the caller's key everywhere it can: header, error code, body."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    body = orjson.loads(await request.read())
    headers = {"x-request-id": f"req-{key}"}
    if "fail" in body["messages"][0]["content"]:
        error = {"message": f"bad key {MASKED}", "type": "invalid_request_error", "code": key}
        return web.json_response({"error": error}, status=400, headers=headers)
    answer = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {key}"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return web.json_response(answer, headers=headers)


def chat(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_key_of_any_shape_never_stored_or_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    url = f"sqlite:///{tmp_path / 'leak.db'}"
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            batch_line("ok", "/v1/chat/completions", chat("hi")),
            batch_line("bad", "/v1/chat/completions", chat("fail")),
        ],
    )
    with Loopback(echoing) as relay:
        monkeypatch.setenv("OPENAI_BASE_URL", relay.url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("BATCHER_DATABASE_URL", url)
        invoke("run", str(src), "-o", str(tmp_path / "out.jsonl"), "--errors", str(tmp_path / "err.jsonl"))
        args = ["export", "1", "-o", str(tmp_path / f"all.{fmt}"), "--format", fmt]
        assert invoke(*args).exit_code == 0
    with Store(url) as store, store.session() as s:
        rows = [r.model_dump_json() for r in s.exec(select(Request))]
        rows += [a.model_dump_json() for a in s.exec(select(Attempt))]
    assert any('"bad"' in r for r in rows)  # the rows are there to check
    leaked = [r for r in rows if KEY in r or MASKED in r]
    assert leaked == []
    for path in tmp_path.glob("*.*"):
        if path.suffix in (".jsonl", ".csv", ".parquet") and path.name != "in.jsonl":
            data = path.read_bytes()
            assert KEY.encode() not in data and MASKED.encode() not in data, path.name
