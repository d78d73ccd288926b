"""How long a call holds its concurrency place: from just before its request leaves until its
answer has been read. The request (a multipart form read from the blob store) is built before the
place is taken; a good answer is classified, parsed and recorded after it is given back, an error
answer is heard by the pace (an overload's cut) before it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from jobs import store as q
from jobs.blobs import BlobReader, StoredFile
from jobs.db import Store
from jobs.records import AttemptRecord, LineResult
from tests.test_executor import (
    CHAT,
    KEY,
    OVERLOAD_503,
    RecordingLimiter,
    add_job,
    chat_ok,
    db,
    lines,
    scripted,
)
from workers.client import ApiClient, ClientConfig
from workers.executor import ExecConfig, Executor
from workers.journal import Journal
from workers.ratelimit import InProcessLimiter, Limits, Permit
from workers.sink import StoreSink

__all__ = ["db"]  # the fixture, shared with the executor's tests

Places = Callable[[], int]
WAV = StoredFile("ab" * 32, "clip.wav", 4)


class PlacesAtLanding(Journal):
    """The real journal, noting how many places are held as each answer's records land in it."""

    def __init__(self, folder: Path, places: Places) -> None:
        super().__init__(folder, owner="t", store="s")
        self.places, self.held = places, list[int]()

    def landed(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> int:
        self.held.append(self.places())
        return super().landed(attempts, results)


def executor(
    db: Store,
    job_id: int,
    tmp_path: Path,
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    journal: Journal | None = None,
    blobs: BlobReader | None = None,
    limiter: InProcessLimiter | None = None,
) -> Executor:
    """One place (a fixed concurrency of 1), the relay scripted by ``handler``; retries at once."""
    config = ExecConfig(results_dir=tmp_path / "results", concurrency=1, adaptive=False)
    client = ApiClient(ClientConfig("https://relay.test/v1", KEY), transport=httpx.MockTransport(handler))
    sink = StoreSink(db, job_id=job_id, owner=config.owner)
    limiter = limiter or InProcessLimiter(Limits())

    async def no_sleep(_: float) -> None:
        return None

    return Executor(
        client=client, limiter=limiter, sink=sink, config=config, journal=journal, blobs=blobs, sleep=no_sleep
    )


class PlacesAtSettle(RecordingLimiter):
    """The limiter, noting how many places are held as the pace settles each call."""

    def __init__(self, places: Places) -> None:
        super().__init__()
        self.places, self.held = places, list[int]()

    async def settle(
        self, permit: Permit, used_tokens: int, *, ok: bool = False, window_full: bool = False
    ) -> None:
        self.held.append(self.places())
        await super().settle(permit, used_tokens, ok=ok, window_full=window_full)


async def run(db: Store, built: Executor, job_id: int) -> None:
    with db.session() as s:
        items = q.claim_lines(s, job_id=job_id, owner=built.config.owner, lease_seconds=60)
    async with built.client:
        await built.run(items)


async def test_the_place_is_held_while_the_call_is_out_and_free_when_its_answer_is_recorded(
    db: Store, tmp_path: Path
) -> None:
    job_id = add_job(db, "/v1/chat/completions", [CHAT, CHAT, CHAT])
    at_relay: list[int] = []
    holder: list[Executor] = []

    def relay(request: httpx.Request) -> httpx.Response:
        at_relay.append(holder[0].pacing.in_flight)
        return chat_ok()

    journal = PlacesAtLanding(tmp_path / "journal", lambda: holder[0].pacing.in_flight)
    holder.append(executor(db, job_id, tmp_path, relay, journal=journal))
    await run(db, holder[0], job_id)
    assert at_relay == [1, 1, 1]  # each call went out holding the one place
    assert journal.held == [0, 0, 0]  # and had given it back before its answer was recorded
    assert [line.state for line in lines(db, job_id)] == ["succeeded"] * 3


async def test_an_uploads_form_is_built_from_the_blob_store_before_the_place_is_taken(
    db: Store, tmp_path: Path
) -> None:
    body: dict[str, object] = {"model": "whisper-1", "file": WAV.as_json()}
    job_id = add_job(db, "/v1/audio/transcriptions", [body])
    held_at_read: list[int] = []
    holder: list[Executor] = []

    def blobs(sha256: str) -> bytes:
        held_at_read.append(holder[0].pacing.in_flight)
        return b"RIFF"

    def relay(request: httpx.Request) -> httpx.Response:
        assert b"RIFF" in request.read()
        return httpx.Response(200, json={"text": "hello"})

    holder.append(executor(db, job_id, tmp_path, relay, blobs=blobs))
    await run(db, holder[0], job_id)
    assert held_at_read == [0]
    assert [line.state for line in lines(db, job_id)] == ["succeeded"]


async def test_an_error_answer_keeps_its_place_until_the_pace_has_heard_it(db: Store, tmp_path: Path) -> None:
    """An overload answer cuts the limit before its place can be handed to the next call."""
    job_id = add_job(db, "/v1/chat/completions", [CHAT])
    holder: list[Executor] = []
    limiter = PlacesAtSettle(lambda: holder[0].pacing.in_flight)
    handler = scripted(httpx.Response(503, json=OVERLOAD_503), chat_ok())
    holder.append(executor(db, job_id, tmp_path, handler, limiter=limiter))
    await run(db, holder[0], job_id)
    assert limiter.held == [1, 0]  # the 503 heard in its place; the good answer after letting it go
    assert holder[0].pacing.counters.overloaded == 1
    assert [line.state for line in lines(db, job_id)] == ["succeeded"]
