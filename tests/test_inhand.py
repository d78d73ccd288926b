"""InHand: lines held by started units stay under a limit that is read anew each time."""

from __future__ import annotations

import asyncio

from workers.inhand import InHand


async def _taken(hand: InHand, lines: int) -> bool:
    """Whether ``take(lines)`` gets through while nothing is given back (it is then cancelled)."""
    task = asyncio.create_task(hand.take(lines))
    for _ in range(20):
        await asyncio.sleep(0)
    if task.done():
        return True
    task.cancel()
    return False


async def test_a_unit_waits_while_the_lines_in_hand_would_pass_the_limit() -> None:
    hand = InHand(lambda: 512)
    await hand.take(256)
    await hand.take(256)
    assert not await _taken(hand, 256)
    assert hand.lines == 512


async def test_lines_given_back_let_the_waiting_unit_in() -> None:
    hand = InHand(lambda: 512)
    await hand.take(512)
    waiting = asyncio.create_task(hand.take(256))
    await asyncio.sleep(0)
    assert not waiting.done()
    await hand.give_back(256)
    await asyncio.wait_for(waiting, 5)
    assert hand.lines == 512


async def test_one_unit_larger_than_the_limit_is_let_in_alone() -> None:
    hand = InHand(lambda: 2)
    assert await _taken(hand, 256)
    assert not await _taken(hand, 1)


async def test_the_limit_follows_the_concurrency_found() -> None:
    admitted = [1]
    hand = InHand(lambda: 2 * 256 * admitted[0])
    await hand.take(512)
    assert not await _taken(hand, 256)
    admitted[0] = 4
    assert await _taken(hand, 256)
