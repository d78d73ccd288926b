"""Units: embedding lines packed per key until full or idle; every other line is a unit of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from jobs.endpoints import Endpoint
from jobs.records import WorkItem
from workers.endpoints.chat import CHAT
from workers.endpoints.embeddings import EMBEDDINGS
from workers.packing import PackLimits
from workers.units import Unit, body_of, units_from


def item(
    n: int, endpoint: Endpoint = EMBEDDINGS, *, model: str = "m", est: int = 5, **body: object
) -> WorkItem:
    payload = {"model": model, "input": f"text {n}"} if endpoint == EMBEDDINGS else {"model": model}
    return WorkItem(n, 1, f"c{n}", endpoint, model, orjson.dumps(payload | body).decode(), 0, est)


async def collect(items: list[WorkItem], pack: PackLimits | None) -> list[list[int]]:
    return [[i.request_id for i in unit.items] async for unit in units_from(items, pack=pack)]


async def test_embeddings_with_one_key_share_a_pack_up_to_its_inputs() -> None:
    units = await collect([item(n) for n in range(1, 6)], PackLimits(max_inputs=2))
    assert units == [[1, 2], [3, 4], [5]]


async def test_a_pack_is_closed_by_its_token_budget() -> None:
    units = await collect([item(n, est=40) for n in range(1, 5)], PackLimits(max_inputs=10, max_tokens=100))
    assert units == [[1, 2], [3, 4]]


async def test_different_keys_and_other_endpoints_do_not_mix() -> None:
    items = [item(1), item(2, dimensions=64), item(3), item(4, CHAT), item(5, model="other")]
    units = await collect(items, PackLimits(max_inputs=10))
    assert sorted(units) == [[1, 3], [2], [4], [5]]


async def test_without_packing_every_line_is_alone() -> None:
    assert await collect([item(1), item(2)], None) == [[1], [2]]


async def test_an_idle_source_releases_open_packs() -> None:
    gate = asyncio.Event()

    async def source() -> AsyncIterator[WorkItem]:
        yield item(1)
        await gate.wait()  # no line comes for longer than the linger
        yield item(2)

    seen: list[list[int]] = []
    async for unit in units_from(source(), pack=PackLimits(max_inputs=10), linger=0.01):
        seen.append([i.request_id for i in unit.items])
        gate.set()
    assert seen == [[1], [2]]


async def test_a_failing_source_raises_through_the_units() -> None:
    async def source() -> AsyncIterator[WorkItem]:
        yield item(1)
        raise RuntimeError("store gone")

    with pytest.raises(RuntimeError, match="store gone"):
        await collect_async(source())


async def collect_async(source: AsyncIterator[WorkItem]) -> list[Unit]:
    return [unit async for unit in units_from(source, pack=PackLimits())]


def test_a_unit_knows_its_call() -> None:
    unit = Unit(
        [item(1, est=3), item(2, est=4)], [{"model": "m", "input": "a"}, {"model": "m", "input": ["b", "c"]}]
    )
    assert (unit.packed, unit.endpoint, unit.model, unit.est_tokens) == (True, EMBEDDINGS, "m", 7)
    assert orjson.loads(unit.content()) == {"model": "m", "input": ["a", "b", "c"]}
    assert unit.spans() == [(0, 1), (1, 3)]
    first, second = unit.halves()
    assert ([i.request_id for i in first.items], [i.request_id for i in second.items]) == ([1], [2])
    single = Unit.single(item(9, CHAT))
    assert not single.packed
    assert single.content() == item(9, CHAT).body.encode()


def test_a_pack_merges_its_bodies_once_for_its_request_and_its_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.units

    merges = []
    real = workers.units.merge_bodies
    monkeypatch.setattr(workers.units, "merge_bodies", lambda bodies: merges.append(1) or real(bodies))
    unit = Unit([item(1), item(2)], [{"model": "m", "input": "a"}, {"model": "m", "input": "b"}])
    assert orjson.loads(unit.content())["input"] == ["a", "b"]
    assert unit.spans() == [(0, 1), (1, 2)] and unit.spans() == [(0, 1), (1, 2)]
    assert len(merges) == 1
    first, _ = unit.halves()
    assert first.spans() == [(0, 1)]  # a new unit merges its own lines


def test_a_line_parsed_by_its_claim_is_not_parsed_again() -> None:
    claimed = item(1)
    claimed.request = {"model": "m", "input": "kept"}  # as ``workers.cache`` leaves it
    assert body_of(claimed) is claimed.request
    assert Unit.single(claimed).requests[0] is claimed.request
    assert body_of(item(2)) == {"model": "m", "input": "text 2"}


async def test_a_pack_is_made_of_the_bodies_its_claim_parsed() -> None:
    lines = [item(n) for n in (1, 2)]
    for line in lines:
        line.request = orjson.loads(line.body)
    [unit] = [u async for u in units_from(lines, pack=PackLimits(max_inputs=2))]
    assert unit.requests[0] is lines[0].request and unit.requests[1] is lines[1].request
