"""The shared limiter, the same tests on fakeredis and on the real Redis.

Reservations are checked through the waits the Lua script hands out (the script's answer), not
by timing calls: two limiter objects stand for two workers sharing one Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from fakeredis import FakeAsyncRedis

from jobs.errors import LimiterError
from workers.aimd import AimdTuning, increase_per_second
from workers.ratelimit import Limits, Permit
from workers.redis_limiter import PROBE_AFTER_S, RedisLimiter


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    if request.param == "fakeredis":
        c: aioredis.Redis = FakeAsyncRedis()
    else:
        c = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield c
    await c.aclose()


def pair(
    client: aioredis.Redis, limits: Limits, *, probe_after: float = PROBE_AFTER_S
) -> tuple[RedisLimiter, RedisLimiter]:
    """Two limiters on one Redis, as two workers would hold them."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    return tuple(  # type: ignore[return-value]
        RedisLimiter(client, limits, prefix=prefix, probe_after=probe_after) for _ in range(2)
    )


async def wait_of(limiter: RedisLimiter, key: str, tokens: int) -> float:
    """The wait the script grants for one reservation (negative: paused, ask again)."""
    answer = await limiter._acquire(keys=[limiter.prefix + key], args=limiter.acquire_args(key, tokens))
    return float(answer.decode().split("|")[0])


async def test_reservations_are_spaced_across_workers(client: aioredis.Redis) -> None:
    """Each reservation, whichever worker makes it, takes the next interval of one shared schedule
    (read from the TAT the script keeps, not from how long the test took between calls)."""
    a, b = pair(client, Limits(rpm=60 / 0.98))  # one call a second between both, after the headroom
    waits, schedule = [], []
    for x in (a, b, a, b):
        waits.append(await wait_of(x, "p|m", 0))
        schedule.append(float(await client.hget(a.prefix + "p|m", "r") or 0))
    assert waits[0] == 0.0  # the first goes at once
    assert all(w > 0 for w in waits[1:])  # the others wait for their places
    assert [round(t - schedule[0], 6) for t in schedule] == [0.0, 1.0, 2.0, 3.0]


async def test_token_reservations_and_refunds(client: aioredis.Redis) -> None:
    """Read from the token TAT the script keeps, not from how long the test took between calls."""
    a, b = pair(client, Limits(tpm=60_000))  # 1000 tokens/s
    assert await wait_of(a, "k", 2000) == 0.0  # the first goes at once, whatever its size
    start = float(await client.hget(a.prefix + "k", "t") or 0) - 2.0
    await a.settle(Permit("k", 2000), 500)  # 1500 given back
    assert float(await client.hget(a.prefix + "k", "t") or 0) == pytest.approx(start + 0.5, abs=1e-5)
    assert await wait_of(b, "k", 1000) > 0  # the 500 still held come first
    assert float(await client.hget(a.prefix + "k", "t") or 0) == pytest.approx(start + 1.5, abs=1e-5)


async def test_keys_are_independent(client: aioredis.Redis) -> None:
    a, _ = pair(client, Limits(rpm=60))
    assert await wait_of(a, "p|m1", 0) == pytest.approx(0.0, abs=0.02)
    assert await wait_of(a, "p|m1", 0) > 0.5
    assert await wait_of(a, "p|m2", 0) == pytest.approx(0.0, abs=0.02)


async def test_cooldown_pauses_every_worker(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits())
    await a.cooldown("k", 5.0)
    assert await wait_of(b, "k", 1) == pytest.approx(-5.0, abs=0.1)


async def test_after_cooldown_one_probe_goes_first(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(), probe_after=0.0)  # short pauses, so the test need not wait a second
    await a.cooldown("k", 0.05)
    await asyncio.sleep(0.1)
    assert await wait_of(a, "k", 1) >= 0  # the probe
    assert await wait_of(b, "k", 1) < 0  # everyone else waits for its answer
    await a.cooldown("k", 0.05)  # the probe got 429 again: the pause starts over
    await a.settle(Permit("k", 1), 0)
    assert await wait_of(b, "k", 1) < 0
    await asyncio.sleep(0.1)
    assert await wait_of(b, "k", 1) >= 0  # the next probe
    await b.settle(Permit("k", 1), 1)  # answered: the gate opens
    assert await wait_of(a, "k", 1) >= 0


async def test_acquire_returns_a_permit_after_the_wait(client: aioredis.Redis) -> None:
    a, _ = pair(client, Limits(rpm=6000))
    permits = [await a.acquire("k", 3) for _ in range(3)]
    assert permits == [Permit("k", 3)] * 3


async def test_unreachable_redis_fails_closed() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    limiter = RedisLimiter(dead, Limits(rpm=60))
    with pytest.raises(LimiterError, match="no call is made"):
        await limiter.acquire("k", 1)
    await dead.aclose()


async def test_unpaced_until_a_429_which_every_worker_then_follows(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits())
    for _ in range(5):
        assert await wait_of(a, "k", 0) == 0.0
        await a.settle(Permit("k", 0), 0, ok=True)
    assert (await b.pace("k")).rate is None
    await a.limited("k", None)
    assert (await b.pace("k")).rate is None  # one 429 alone is noise
    await b.limited("k", None)  # two of seven calls refused: the rate
    pace = await b.pace("k")
    assert pace.rate == pytest.approx(AimdTuning().decrease * 5)  # the goodput: five successes this second
    assert (pace.learned, pace.decreases) == (True, 1)
    await wait_of(b, "k", 0)
    assert await wait_of(a, "k", 0) == pytest.approx(1 / pace.rate, abs=0.02)  # b's place is a's pace too


async def test_the_first_pace_found_doubles_until_the_next_429(client: aioredis.Redis) -> None:
    """As workers.aimd: the first burst's goodput misses the calls still out, so it is a floor."""
    a, b = pair(client, Limits())
    for _ in range(5):
        await wait_of(a, "k", 0)
        await a.settle(Permit("k", 0), 0, ok=True)
    await a.limited("k", None)
    await b.limited("k", None)
    found = (await a.pace("k")).rate
    assert found is not None
    await wait_of(a, "k", 0)  # the first place after the decrease is free: no wait
    for _ in range(3):
        await wait_of(a, "k", 0)  # paced: the caller waited, the pace is binding
        await b.settle(Permit("k", 0), 0, ok=True)
    assert (await b.pace("k")).rate == pytest.approx(found + 3)  # one a success: doubling per second


async def test_one_decrease_per_congestion_event_and_increase_while_binding(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(learned={"k": 50.0}))
    await wait_of(a, "k", 0)
    assert await wait_of(a, "k", 0) > 0  # the pace binds
    for _ in range(10):
        await b.settle(Permit("k", 0), 0, ok=True)
    climbed = 50.0 + 10 * increase_per_second(50.0, AimdTuning()) / 50  # as workers.aimd does
    assert (await a.pace("k")).rate == pytest.approx(climbed, abs=0.001)
    await b.settle(Permit("k", 0), 0, ok=True, window_full=True)  # remaining 0: hold
    assert (await a.pace("k")).rate == pytest.approx(climbed, abs=0.001)
    await a.limited("k", None)
    await b.limited("k", None)
    assert (await a.pace("k")).decreases == 1


async def test_learned_pace_never_passes_an_explicit_rpm(client: aioredis.Redis) -> None:
    a, _ = pair(client, Limits(rpm=600, learned={"k": 1000.0}))
    await wait_of(a, "k", 0)
    pace = await a.pace("k")
    assert pace.rate == pytest.approx(9.8)
    assert not pace.learned


async def test_a_pause_voids_places_reserved_before_it(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(rpm=60 / 0.98))  # one a second
    await a.acquire("k", 0)
    waiter = asyncio.create_task(b.acquire("k", 0))  # its place is a second away
    await asyncio.sleep(0.1)
    await a.limited("k", 0.3)
    await b.settle(await waiter, 0)  # the probe after the pause is answered: the gate opens
    # The waiter reserved again after the pause: the next place is a full interval after it.
    assert await wait_of(a, "k", 0) == pytest.approx(1.0, abs=0.1)


async def test_a_pause_shorter_than_a_second_opens_no_probe_gate(client: aioredis.Redis) -> None:
    """A sliding window's edge (a wait of milliseconds): every worker goes on at the pace after it."""
    a, b = pair(client, Limits())
    await a.cooldown("k", 0.05)
    await asyncio.sleep(0.1)
    assert await wait_of(a, "k", 1) >= 0
    assert await wait_of(b, "k", 1) >= 0  # no probe holds b back
    await a.cooldown("k", PROBE_AFTER_S)
    await asyncio.sleep(PROBE_AFTER_S + 0.05)
    assert await wait_of(a, "k", 1) >= 0  # the probe
    assert await wait_of(b, "k", 1) < 0  # a storm's pause: the others wait for the probe's answer


async def test_a_429_at_the_ceiling_steps_down_from_the_shared_pace(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(rpm=6000))
    await wait_of(a, "k", 0)
    for _ in range(3):  # a stalled second: three successes
        await b.settle(Permit("k", 0), 0, ok=True)
    await b.limited("k", None)
    await a.limited("k", None)
    assert (await a.pace("k")).rate == pytest.approx(98.0 * 0.98)


async def test_cancelled_waits_give_their_places_back(client: aioredis.Redis) -> None:
    """A job paused with calls queued leaves the shared pace where its last call went, in any
    order the waits end; a place still held is never shared."""
    a, b = pair(client, Limits(rpm=60 / 0.98, tpm=6000))  # one a second, 100 tokens a second
    state = a.prefix + "k"
    await a.acquire("k", 10)
    sent = await client.hmget(state, ["r", "t"])
    waiters = [asyncio.create_task(b.acquire("k", 10)) for _ in range(3)]
    await asyncio.sleep(0.2)  # all three reserved: places 1, 2 and 3 s away
    for i in (1, 0):  # the middle one, then the first: holes behind the last, still held
        waiters[i].cancel()
        await asyncio.gather(waiters[i], return_exceptions=True)
    assert await client.hget(state, "r") != sent[0]
    waiters[2].cancel()
    await asyncio.gather(waiters[2], return_exceptions=True)
    assert await client.hget(state, "r") == sent[0]
    assert float((await client.hget(state, "t")) or 0) == pytest.approx(float(sent[1] or 0))
    assert not [f for f in await client.hkeys(state) if f.startswith(b"h:")]


def answer_held(limiter: RedisLimiter) -> tuple[asyncio.Event, asyncio.Event]:
    """Delay the acquire script's answer: the first event is set once the script ran in Redis, the
    answer reaches the caller once the test sets the second."""
    ran, answer_read = asyncio.Event(), asyncio.Event()
    script = limiter._acquire

    async def answer_late(**kw: object) -> object:
        answer = await script(**kw)
        ran.set()
        await answer_read.wait()
        return answer

    limiter._acquire = answer_late
    return ran, answer_read


async def test_a_caller_cancelled_while_its_place_is_reserved_gives_it_back(client: aioredis.Redis) -> None:
    """The script ran (the place is taken in Redis) but its answer had not reached the caller."""
    a, b = pair(client, Limits(rpm=60 / 0.98, tpm=6000))
    state = a.prefix + "k"
    await a.acquire("k", 10)
    sent = await client.hmget(state, ["r", "t"])
    ran, answer_read = answer_held(b)
    waiter = asyncio.create_task(b.acquire("k", 10))
    await ran.wait()
    assert await client.hget(state, "r") != sent[0]
    waiter.cancel()
    await asyncio.sleep(0)
    answer_read.set()
    await asyncio.gather(waiter, return_exceptions=True)
    assert await client.hmget(state, ["r", "t"]) == sent


async def test_a_probe_cancelled_before_it_is_sent_lets_another_probe(client: aioredis.Redis) -> None:
    """The gate after a pause waits for the probe's answer: a probe never sent must not hold every
    worker back for the whole probe window."""
    a, b = pair(client, Limits(), probe_after=0.0)  # short pauses, so the test need not wait a second
    await a.cooldown("k", 0.05)
    await asyncio.sleep(0.1)
    ran, answer_read = answer_held(b)
    waiter = asyncio.create_task(b.acquire("k", 1))  # the probe
    await ran.wait()
    assert await wait_of(a, "k", 1) < 0  # the others wait for the probe's answer
    waiter.cancel()
    await asyncio.sleep(0)
    answer_read.set()
    await asyncio.gather(waiter, return_exceptions=True)
    assert await wait_of(a, "k", 1) >= 0  # the next probe goes


async def test_a_caller_cancelled_while_its_place_is_checked_gives_it_back(client: aioredis.Redis) -> None:
    """Its wait is over, but the check that no pause voided the place had not answered."""
    a, b = pair(client, Limits(rpm=60 / 0.05 / 0.98, tpm=60 * 2000))  # 20 a second, 2,000 tokens a second
    state = a.prefix + "k"
    await a.acquire("k", 100)
    sent = await client.hmget(state, ["r", "t"])
    checking = asyncio.Event()

    async def never_answers(**kw: object) -> object:
        checking.set()
        await asyncio.Event().wait()
        return 1

    b._valid = never_answers
    waiter = asyncio.create_task(b.acquire("k", 100))  # 0.05 s away: checked once its wait is over
    await checking.wait()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert await client.hmget(state, ["r", "t"]) == sent


async def test_a_pause_voids_places_given_back_before_it(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(rpm=60 / 0.98))
    state = a.prefix + "k"
    await a.acquire("k", 0)
    waiters = [asyncio.create_task(b.acquire("k", 0)) for _ in range(2)]
    await asyncio.sleep(0.2)
    waiters[0].cancel()  # a hole behind the second place
    await asyncio.gather(waiters[0], return_exceptions=True)
    await a.cooldown("k", 0.5)  # the pause voids every place before it, holes too
    assert not [f for f in await client.hkeys(state) if f.startswith(b"h:")]
    waiters[1].cancel()
    await asyncio.gather(waiters[1], return_exceptions=True)
    assert float(await client.hget(state, "r") or 0) == pytest.approx(
        float(await client.hget(state, "p") or 0)
    )


async def test_429s_that_do_not_grow_with_the_rate_leave_the_shared_pace_alone(
    client: aioredis.Redis,
) -> None:
    a, b = pair(client, Limits())
    for i in range(200):  # two 429s among 200 calls: noise
        if i in (50, 150):
            await b.limited("k", 0.012)
        else:
            await a.settle(Permit("k", 0), 0, ok=True)
    pace = await a.pace("k")
    assert (pace.rate, pace.decreases) == (None, 0)


async def test_acquire_waits_out_a_pause_then_grants(client: aioredis.Redis) -> None:
    """Through the script's "paused: ask again" answer, which carries no place."""
    a, b = pair(client, Limits())
    await a.cooldown("k", 0.1)
    assert await b.acquire("k", 1) == Permit("k", 1)


async def _age_recent_calls(client: aioredis.Redis, state: str, seconds: float) -> None:
    """Stand for the recent calls having taken ``seconds`` (the script reads Redis's own clock)."""
    now, micros = await client.time()
    await client.hset(state, "rs", f"{now + micros / 1e6 - seconds:.6f}")


async def test_429s_seconds_apart_at_a_low_rate_lower_the_shared_pace(client: aioredis.Redis) -> None:
    """As workers.aimd: at 10 req/s, a 429 three seconds (30 calls) before another one still counts."""
    a, b = pair(client, Limits(learned={"k": 10.0}))
    await wait_of(a, "k", 0)
    await a.limited("k", None)
    for _ in range(29):
        await b.settle(Permit("k", 0), 0, ok=True)
    await _age_recent_calls(client, a.prefix + "k", 3.0)  # 30 calls in three seconds
    await b.limited("k", None)  # 2 of 31
    assert (await a.pace("k")).decreases == 1


async def test_the_recent_calls_close_after_a_second_and_half_the_window(client: aioredis.Redis) -> None:
    """A hundred calls over a second and a half: the bucket closed, the 429 among them stays counted."""
    a, b = pair(client, Limits(learned={"k": 100.0}))
    state = a.prefix + "k"
    await wait_of(a, "k", 0)
    await a.limited("k", None)
    for _ in range(99):
        await b.settle(Permit("k", 0), 0, ok=True)
    await _age_recent_calls(client, state, 1.5)
    await b.settle(Permit("k", 0), 0, ok=True)  # closes the bucket: 100 calls, one 429
    assert [int(v or 0) for v in await client.hmget(state, ["rlc", "rlr", "rc", "rr"])] == [100, 1, 1, 0]
    await b.limited("k", None)  # 2 of 102: noise
    await a.limited("k", None)  # 3 of 103: 2.9 %, noise still
    assert (await a.pace("k")).decreases == 0
    await b.limited("k", None)  # 4 of 104
    assert (await a.pace("k")).decreases == 1
    assert [int(v or 0) for v in await client.hmget(state, ["rlc", "rlr", "rc", "rr"])] == [0, 0, 0, 0]


async def test_a_key_idle_for_half_a_minute_forgets_its_shared_429s(client: aioredis.Redis) -> None:
    a, b = pair(client, Limits(learned={"k": 10.0}))
    state = a.prefix + "k"
    await wait_of(a, "k", 0)
    await a.limited("k", None)
    now, micros = await client.time()
    await client.hset(state, "ra", f"{now + micros / 1e6 - 30.0:.6f}")
    await b.limited("k", None)  # alone since the idle half minute
    assert (await a.pace("k")).decreases == 0
    assert [int(v or 0) for v in await client.hmget(state, ["rc", "rr"])] == [1, 1]
