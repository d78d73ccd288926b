"""Helpers shared by tests: input files, the CLI in-process, store queries, and the stand-in
relay's task routes over HTTP (``task_relay_fixtures``: a relay of its own and a client with the
key, one pair a test module; ``post_ok`` / ``dto_ok``: a 200 answer's JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner, Result
from sqlmodel import select

from batcher.cli import cli
from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.db import Store
from jobs.models import Attempt, Request
from jobs.records import LineResult, Usage
from jobs.vectors import take_vectors

RELAY_KEY = "sk-canary-integration-0123456789"  # the key the stand-in relay of the tests requires


def task_relay_fixtures(key: str, *, headers: dict[str, str] | None = None, **config: Any) -> tuple[Any, Any]:
    """The ``relay`` and ``http`` fixtures of a test module of the stand-in relay's task routes:
    a relay of its own requiring ``key`` (tasks lasting 100 s, stepped with ``advance_tasks``) and
    a client at its root sending the key (and ``headers``)."""

    @pytest.fixture
    def relay() -> Iterator[RelayServer]:
        with RelayServer(RelayConfig(api_key=key, task_seconds=100, **config)) as server:
            yield server

    @pytest.fixture
    def http(relay: RelayServer) -> Iterator[httpx.Client]:
        sent = {"Authorization": f"Bearer {key}", **(headers or {})}
        with httpx.Client(base_url=relay.url.removesuffix("/v1"), headers=sent, timeout=10) as client:
            yield client

    return relay, http


def post_ok(http: httpx.Client, path: str, **body: Any) -> dict[str, Any]:
    """POST ``body`` as JSON; the answer must be a 200: its JSON object."""
    answer = http.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def dto_ok(http: httpx.Client, path: str) -> dict[str, Any]:
    """GET a task in new-api's success envelope: its TaskDto."""
    answer = http.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.json()["code"] == "success"
    return dict(answer.json()["data"])


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def invoke(*args: str) -> Result:
    """Run the CLI in this process (stdout and stderr apart)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def all_lines(store: Store) -> list[Request]:
    with store.session() as s:
        return list(s.exec(select(Request).order_by(Request.job_id, Request.line_no)))


def all_attempts(store: Store) -> list[Attempt]:
    with store.session() as s:
        return list(s.exec(select(Attempt).order_by(Attempt.id)))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def finished_job(
    store: Store,
    answers: list[dict[str, object] | None],
    endpoint: str = "/v1/embeddings",
    *,
    vectors_apart: bool = True,
) -> int:
    """A running job whose lines succeeded with these answers (None: failed), without any call.

    Embeddings are stored apart as float32, as the executor does; ``vectors_apart=False`` keeps
    them in the JSON body, as lines stored before the vector table were.
    """
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t", source_sha256="x")
        assert job.id is not None
        rows = [
            {
                "job_id": job.id, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": endpoint, "model": "m",
                "body": "{}", "est_tokens": 1, "state": "pending", "attempts": 0, "claims": 0,
                "usage_estimated": False,
            }
            for i in range(len(answers))
        ]  # fmt: skip
        q.insert_requests(s, rows)
        job.total = len(rows)
        q.start_job(s, job.id)
        items = q.claim_lines(s, job_id=job.id, owner="o", lease_seconds=60)
        results = [
            _succeeded(it.request_id, job.id, a, vectors_apart)
            if a is not None
            else LineResult(it.request_id, job.id, "failed", 400, error_code="bad", error_message="no")
            for it, a in zip(items, answers, strict=True)
        ]
        q.record_results(s, results)
        return job.id


def emb(*vectors: list[float]) -> dict[str, object]:
    return {"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}


def _succeeded(request_id: int, job_id: int, answer: dict[str, object], vectors_apart: bool) -> LineResult:
    body = orjson.loads(orjson.dumps(answer))
    vectors = take_vectors(body) if vectors_apart else None
    return LineResult(
        request_id,
        job_id,
        "succeeded",
        200,
        orjson.dumps(body).decode(),
        usage=Usage(3, 0, 3),
        vectors=vectors,
    )
