"""The answer byte budget: big embedding answers take turns, small ones never wait."""

from __future__ import annotations

import asyncio

import pytest

from jobs.endpoints import Endpoint
from jobs.records import WorkItem
from workers.answers import AnswerBudget, answer_bytes
from workers.units import Unit


def unit(endpoint: str, bodies: list[dict[str, object]], model: str = "text-embedding-3-small") -> Unit:
    items = [WorkItem(i, 1, f"c{i}", Endpoint(endpoint), model, "{}", 0, 1) for i in range(len(bodies))]
    return Unit(items, [dict(b) for b in bodies])


@pytest.mark.parametrize(
    ("bodies", "model", "expected"),
    [
        ([{"input": "x"}] * 256, "text-embedding-3-small", 256 * 1536 * 20),
        ([{"input": "x"}] * 256, "text-embedding-3-large", 256 * 3072 * 20),
        ([{"input": "x", "encoding_format": "base64"}] * 256, "m", 256 * 1536 * 6),
        ([{"input": ["a", "b"], "dimensions": 512}] * 100, "m", 200 * 512 * 20),
        ([{"input": "x", "dimensions": 8}] * 256, "m", 0),  # small: reserves nothing
        ([{"input": "x"}], "m", 0),
    ],
)
def test_answer_bytes_table(bodies: list[dict[str, object]], model: str, expected: int) -> None:
    assert answer_bytes(unit("/v1/embeddings", bodies, model)) == expected


def test_chat_answers_reserve_nothing() -> None:
    assert answer_bytes(unit("/v1/chat/completions", [{"messages": []}] * 300)) == 0


async def test_big_answers_take_turns_and_small_ones_pass() -> None:
    budget = AnswerBudget(100)
    order: list[str] = []
    first_in, release_first = asyncio.Event(), asyncio.Event()

    async def big(name: str, gate: asyncio.Event | None) -> None:
        async with budget.hold(60):
            order.append(f"{name} in")
            first_in.set()
            if gate is not None:
                await gate.wait()
            order.append(f"{name} out")

    async def small() -> None:
        async with budget.hold(0):
            order.append("small")

    a = asyncio.create_task(big("a", release_first))
    await first_in.wait()
    b = asyncio.create_task(big("b", None))
    await small()
    await asyncio.sleep(0)
    assert order == ["a in", "small"]  # b waits: 60 + 60 > 100
    release_first.set()
    await asyncio.gather(a, b)
    assert order == ["a in", "small", "a out", "b in", "b out"]
    assert budget.used == 0


async def test_an_answer_bigger_than_the_budget_runs_alone() -> None:
    budget = AnswerBudget(10)
    async with budget.hold(50):
        assert budget.used == 50
    assert budget.used == 0
