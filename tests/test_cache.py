"""The response cache's rules: which requests get a key, twins sharing one call, claims served."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from jobs import store as q
from jobs.db import Store
from jobs.endpoints import Endpoint
from jobs.models import RequestState
from jobs.options import CacheMode
from jobs.records import LineResult, Usage, WorkItem
from jobs.vectors import Vectors
from workers.cache import (
    SHARED_BLOCK_BYTES,
    SharedCalls,
    deterministic,
    parsed_key,
    request_key,
    serve_from_cache,
)
from workers.endpoints.chat import CHAT
from workers.endpoints.claude import MESSAGES
from workers.endpoints.completions import COMPLETIONS
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.images import GENERATIONS
from workers.endpoints.moderations import MODERATIONS
from workers.endpoints.responses import RESPONSES
from workers.endpoints.speech import SPEECH
from workers.endpoints.transcriptions import TRANSCRIPTIONS

EMB = EMBEDDINGS
MSG = [{"role": "user", "content": "hi"}]
CONTENTS = [{"role": "user", "parts": [{"text": "hi"}]}]
GEMINI = Endpoint("/v1beta/models/gemini-2.5-flash:generateContent")
GEMINI_EMBED = Endpoint("/v1beta/models/text-embedding-004:embedContent")
AUDIO = {"blob": "a" * 64, "name": "a.mp3", "bytes": 10, "seconds": 1.5}


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (CHAT, {"model": "m", "messages": MSG, "temperature": 0}, True),
        (CHAT, {"model": "m", "messages": MSG, "temperature": 0.0, "seed": 1}, True),
        (CHAT, {"model": "m", "messages": MSG, "temperature": 0.7}, False),
        (CHAT, {"model": "m", "messages": MSG, "temperature": 0.7, "seed": 1}, False),
        (CHAT, {"model": "m", "messages": MSG, "seed": 7}, True),
        (CHAT, {"model": "m", "messages": MSG}, False),  # the default temperature is 1: sampled
        (CHAT, {"model": "m", "messages": MSG, "seed": None}, False),
        (CHAT, {"model": "m", "messages": MSG, "temperature": False}, False),  # not a number
        (COMPLETIONS, {"model": "m", "prompt": "x", "temperature": 0}, True),
        (EMB, {"model": "e", "input": "x"}, True),
        (SPEECH, {"model": "tts-1", "input": "x", "voice": "alloy"}, False),
        (MODERATIONS, {"model": "omni-moderation-latest", "input": "x"}, True),
        (GEMINI_EMBED, {"content": {"parts": [{"text": "x"}]}}, True),
        (GEMINI, {"contents": CONTENTS, "generationConfig": {"temperature": 0}}, True),
        (GEMINI, {"contents": CONTENTS, "generationConfig": {"seed": 3}}, True),
        (GEMINI, {"contents": CONTENTS, "temperature": 0}, False),  # Gemini reads generationConfig only
        (GEMINI, {"contents": CONTENTS}, False),
        (MESSAGES, {"model": "claude-x", "max_tokens": 5, "messages": MSG, "temperature": 0}, True),
        (MESSAGES, {"model": "claude-x", "max_tokens": 5, "messages": MSG}, False),
        (RESPONSES, {"model": "m", "input": "x", "temperature": 0}, True),
        (TRANSCRIPTIONS, {"model": "whisper-1", "file": AUDIO, "temperature": 0}, True),
        (
            TRANSCRIPTIONS,
            {"model": "whisper-1", "file": AUDIO},
            False,
        ),  # the rule of chat: no temperature, no seed
        (TRANSCRIPTIONS, {"model": "whisper-1", "file": AUDIO, "temperature": 0.4}, False),
        (GENERATIONS, {"model": "dall-e-3", "prompt": "x"}, False),
    ],
)
def test_deterministic_requests(endpoint: Endpoint, body: dict[str, Any], expected: bool) -> None:
    assert deterministic(endpoint, body) is expected


def key(endpoint: Endpoint, body: dict[str, Any], mode: CacheMode = CacheMode.AUTO) -> str | None:
    return request_key(endpoint, orjson.dumps(body).decode(), mode)


def test_request_key_is_the_canonical_body_whatever_its_key_order() -> None:
    a = key(CHAT, {"model": "m", "messages": MSG, "temperature": 0})
    b = key(CHAT, {"temperature": 0, "messages": MSG, "model": "m"})
    assert a is not None and a == b
    assert len(a) == 32


def test_request_key_differs_with_model_endpoint_and_content() -> None:
    base = {"model": "m", "prompt": "x", "temperature": 0}
    keys = {
        key(COMPLETIONS, base),
        key(COMPLETIONS, base | {"model": "other"}),
        key(COMPLETIONS, base | {"prompt": "y"}),
        key(COMPLETIONS, base | {"max_tokens": 5}),
        key(CHAT, base),
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    ("mode", "sampled", "greedy", "embedding", "speech"),
    [
        (CacheMode.AUTO, False, True, True, False),
        (CacheMode.ALL, True, True, True, False),
        (CacheMode.OFF, False, False, False, False),
    ],
)
def test_request_key_by_mode(
    mode: CacheMode, sampled: bool, greedy: bool, embedding: bool, speech: bool
) -> None:
    got = (
        key(CHAT, {"model": "m", "messages": MSG, "temperature": 0.9}, mode) is not None,
        key(CHAT, {"model": "m", "messages": MSG, "temperature": 0}, mode) is not None,
        key(EMB, {"model": "e", "input": "x"}, mode) is not None,
        key(SPEECH, {"model": "t", "input": "x", "voice": "alloy"}, mode) is not None,
    )
    assert got == (sampled, greedy, embedding, speech)


def test_files_and_routes_are_part_of_the_key() -> None:
    """A file field holds its file's SHA-256: another file, another key; Gemini's route names its model."""
    other = AUDIO | {"blob": "b" * 64}
    a = key(TRANSCRIPTIONS, {"model": "whisper-1", "file": AUDIO, "temperature": 0})
    b = key(TRANSCRIPTIONS, {"model": "whisper-1", "file": other, "temperature": 0})
    assert a is not None and b is not None and a != b
    body = {"contents": CONTENTS, "generationConfig": {"temperature": 0}}
    assert key(GEMINI, body) != key(Endpoint("/v1beta/models/gemini-2.5-pro:generateContent"), body)


@pytest.mark.parametrize("mode", [CacheMode.AUTO, CacheMode.ALL])
def test_answers_kept_as_files_and_tasks_are_never_cached(mode: CacheMode) -> None:
    assert key(GENERATIONS, {"model": "dall-e-3", "prompt": "x"}, mode) is None
    assert key(SPEECH, {"model": "tts-1", "input": "x", "voice": "alloy"}, mode) is None
    assert key(Endpoint("/v1/videos"), {"model": "sora-2", "prompt": "x", "seed": 1}, mode) is None  # a task


# --- twins in one executor -------------------------------------------------------------------------


def item(n: int, cache_key: str | None) -> WorkItem:
    return WorkItem(n, 1, f"c{n}", EMB, "e", '{"model": "e", "input": "x"}', 0, 1, cache_key=cache_key)


def ok(request_id: int, *, job_id: int = 1, body: str = '{"data": []}', **extra: Any) -> LineResult:
    usage = Usage(prompt_tokens=3, total_tokens=3)
    return LineResult(request_id, job_id, RequestState.SUCCEEDED, 200, body, usage=usage, **extra)


class Calls:
    def __init__(self, remember: int = 8) -> None:
        self.finished: list[LineResult] = []
        self.held: set[int] = set()
        self.shared = SharedCalls(
            finish=self.finish, hold=self.held.update, let_go=self.held.difference_update, remember=remember
        )

    def finish(self, result: LineResult) -> None:
        self.finished.append(result)
        self.shared.settled(result)


def test_twins_wait_for_the_first_line_and_take_a_copy_of_its_result() -> None:
    calls = Calls()
    admitted = [i.request_id for i in map(item, [1, 2, 3, 4], ["k", "k", None, "j"]) if calls.shared.admit(i)]
    assert admitted == [1, 3, 4]
    assert calls.held == {2}  # the twin's lease is kept while it waits
    calls.finish(ok(1, cache_key="k", latency_ms=40))
    twin = calls.finished[-1]
    assert twin.request_id == 2 and twin.cached and twin.cache_key is None and twin.latency_ms is None
    assert (twin.response_body, twin.usage, twin.status_code) == ('{"data": []}', ok(1).usage, 200)
    assert calls.held == set()


def test_a_twin_claimed_after_its_line_finished_is_answered_from_memory() -> None:
    calls = Calls()
    assert calls.shared.admit(item(1, "k"))
    block = bytes(range(256)) * (SHARED_BLOCK_BYTES // 256 + 1)  # a pack's block, past the shared size
    vectors = Vectors(block, 2, start=1, stop=2)  # this line's part of it
    calls.finish(ok(1, cache_key="k", vectors=vectors))
    assert not calls.shared.admit(item(9, "k"))
    late = calls.finished[-1]
    assert late.request_id == 9 and late.cached
    assert late.vectors is not None and late.vectors.raw() == vectors.raw()
    assert len(late.vectors.data) == 8  # kept alone, not with the whole pack's block


def test_a_small_block_is_kept_shared_by_the_answers_in_memory() -> None:
    calls = Calls()
    assert calls.shared.admit(item(1, "k"))
    vectors = Vectors(bytes(range(16)), 2, start=1, stop=2)
    calls.finish(ok(1, cache_key="k", vectors=vectors))
    assert not calls.shared.admit(item(9, "k"))
    late = calls.finished[-1]
    assert late.vectors is not None and late.vectors.raw() == vectors.raw()
    assert late.vectors.data is vectors.data  # 16 bytes: no copy


def test_memory_of_answers_is_bounded() -> None:
    calls = Calls(remember=2)
    for n, k in enumerate("abc"):
        assert calls.shared.admit(item(n, k))
        calls.finish(ok(n, cache_key=k))
    assert calls.shared.admit(item(10, "a"))  # forgotten: called again
    assert not calls.shared.admit(item(11, "c"))


def test_twins_of_a_failed_line_fail_the_same_way_not_marked_cached() -> None:
    calls = Calls()
    assert calls.shared.admit(item(1, "k"))
    assert not calls.shared.admit(item(2, "k"))
    failed = LineResult(1, 1, RequestState.FAILED, 400, error_code="invalid_request", error_message="bad")
    calls.finish(failed)
    twin = calls.finished[-1]
    assert (twin.request_id, twin.state, twin.error_code, twin.cached) == (
        2,
        "failed",
        "invalid_request",
        False,
    )
    assert calls.shared.admit(item(3, "k"))  # a failure is not remembered


def test_released_line_takes_its_twins_back_with_it() -> None:
    calls = Calls()
    one, two, three = item(1, "k"), item(2, "k"), item(3, "k")
    assert calls.shared.admit(one)
    assert not calls.shared.admit(two) and not calls.shared.admit(three)
    assert [i.request_id for i in calls.shared.released([one])] == [1, 2, 3]
    assert calls.held == set()
    assert calls.shared.admit(item(4, "k"))  # nothing in flight for the key any more


# --- claims served from the store ------------------------------------------------------------------


def running_job(store: Store, bodies: list[dict[str, Any]]) -> int:
    """A running job of embedding lines with these bodies, nothing called yet."""
    with store.session() as s:
        job = q.create_job(s, name="t", source_path="/t", source_sha256="x")
        assert job.id is not None
        rows = [
            {
                "job_id": job.id, "custom_id": f"c{i}", "line_no": i + 1, "endpoint": EMB.path, "model": "e",
                "body": orjson.dumps(b).decode(), "est_tokens": 1, "state": "pending", "attempts": 0,
                "claims": 0, "usage_estimated": False,
            }
            for i, b in enumerate(bodies)
        ]  # fmt: skip
        q.insert_requests(s, rows)
        job.total = len(rows)
        q.start_job(s, job.id)
        return job.id


def claim(store: Store, job_id: int, mode: CacheMode = CacheMode.AUTO) -> tuple[list[WorkItem], int]:
    with store.session() as session:
        items = q.claim_lines(session, job_id=job_id, owner="me", lease_seconds=60)
        served = serve_from_cache(session, items, mode)
    return served.misses, served.hits


def answer(store: Store, items: list[WorkItem]) -> None:
    """Record each line's answer as a call would: its own body, usage and vectors, with its key."""
    results = []
    for it in items:
        text = orjson.loads(it.body)["input"]
        vectors = Vectors(struct.pack("<2f", len(text), 0.5), 2)
        results.append(
            ok(
                it.request_id,
                job_id=it.job_id,
                cache_key=it.cache_key,
                vectors=vectors,
                body=f'{{"t": "{text}"}}',
            )
        )
    with store.session() as session:
        q.record_results(session, results)


BODIES = [{"model": "e", "input": "a"}, {"model": "e", "input": "bb"}]


def test_a_claim_is_answered_from_an_earlier_jobs_results(store: Store) -> None:
    first = running_job(store, BODIES)
    misses, hits = claim(store, first)
    assert (len(misses), hits) == (2, 0) and all(i.cache_key for i in misses)
    answer(store, misses)
    second = running_job(store, [{"input": "bb", "model": "e"}, {"model": "e", "input": "new"}])
    misses, hits = claim(store, second)
    assert hits == 1 and [orjson.loads(i.body)["input"] for i in misses] == ["new"]
    with store.session() as s:
        [hit] = [r for r in q.iter_results(s, second) if r.state == RequestState.SUCCEEDED]
        [orig] = [r for r in q.iter_results(s, first) if r.custom_id == "c1"]
        assert hit.cached and not orig.cached and hit.attempts == 0
        assert (hit.response_body, hit.total_tokens, hit.status_code) == (orig.response_body, 3, 200)
        assert hit.vectors is not None and orig.vectors is not None
        assert hit.vectors.raw() == orig.vectors.raw()
        assert q.get_job(s, second).succeeded == 1
        assert q.cache_stats(s).hits == 1 and q.cache_stats(s).entries == 2
        assert q.cache_stats(s).saved_tokens == 3
        [saved] = q.cached_lines(s, [second])
        assert (saved.model, saved.lines, saved.usage.total_tokens) == ("e", 1, 3)


def test_a_claim_keeps_each_lines_parsed_body_for_the_executor(store: Store) -> None:
    job = running_job(store, [{"model": "e", "input": "a", "dimensions": 2}])
    [line], _ = claim(store, job)
    assert line.request == orjson.loads(line.body)
    assert line.cache_key == request_key(line.endpoint, line.body, CacheMode.AUTO)
    assert parsed_key(line.endpoint, line.request, CacheMode.AUTO) == line.cache_key


def test_no_cache_claims_every_line_and_keys_none(store: Store) -> None:
    first = running_job(store, BODIES)
    answer(store, claim(store, first)[0])
    second = running_job(store, BODIES)
    misses, hits = claim(store, second, CacheMode.OFF)
    assert (len(misses), hits) == (2, 0) and all(i.cache_key is None for i in misses)


def test_deleting_the_paying_job_drops_its_keys_but_not_the_copies(store: Store) -> None:
    first = running_job(store, BODIES)
    answer(store, claim(store, first)[0])
    second = running_job(store, BODIES)
    assert claim(store, second)[1] == 2
    with store.session() as s:
        q.complete_if_done(s, first)
        q.delete_jobs(s, [first])
    with store.session() as s:
        assert q.cache_stats(s).entries == 0
        assert [r.vectors.raw() if r.vectors else None for r in q.iter_results(s, second)] == [
            struct.pack("<2f", 1, 0.5), struct.pack("<2f", 2, 0.5)
        ]  # fmt: skip
    third = running_job(store, BODIES)
    assert claim(store, third)[1] == 0


def test_clear_older_than_keeps_newer_keys(store: Store) -> None:
    job = running_job(store, BODIES)
    answer(store, claim(store, job)[0])
    with store.session() as s:
        assert q.clear_cache(s, before=datetime(2000, 1, 1, tzinfo=UTC)) == 0
        assert q.clear_cache(s) == 2
        assert q.cache_stats(s).entries == 0


def test_two_results_of_one_key_keep_the_first(store: Store) -> None:
    job = running_job(store, [BODIES[0], BODIES[0]])
    misses, _ = claim(store, job)
    assert misses[0].cache_key == misses[1].cache_key
    answer(store, misses)  # both called (two workers at once): no error, one key
    with store.session() as s:
        assert q.cache_stats(s).entries == 1
