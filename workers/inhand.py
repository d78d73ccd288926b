"""Lines in hand: how many claimed lines the executor holds in units started and not yet done.

Units that wait for a call's slot still hold their lines (claimed, leased, bodies parsed). With
the concurrency found low, 512 waiting packs of 256 were 130,000 lines in memory and on lease for
nothing; ``InHand`` keeps them to twice what the calls found to fit in flight can carry, so
memory follows the concurrency, not the job. The executor never sets the limit below twice its
ceiling of calls, so lines that go one a call start as they did before (and a few waiting in a
retry's backoff do not hold the others back). One unit is always let in, however large.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class InHand:
    """A count of lines in hand, kept at or under ``limit()`` (read each time: it follows the pace)."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.lines = 0
        self._limit = limit
        self._changed = asyncio.Condition()

    async def take(self, lines: int) -> None:
        """Wait until ``lines`` more fit (or none is in hand), then hold them."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self.lines or self.lines + lines <= self._limit())
            self.lines += lines

    async def give_back(self, lines: int) -> None:
        """These lines are done here."""
        async with self._changed:
            self.lines -= lines
            self._changed.notify_all()
