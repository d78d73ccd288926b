"""The best a client can do against a relay that caps calls in flight: exactly the cap, always.

A plain aiohttp loop that knows the cap and keeps precisely that many calls out, each sent the
moment the last one came back, with no store, no journal and no parsing. Against the stand-in
relay it measures what the relay itself allows per second once its own work around each call is
counted, which ``cap / latency`` leaves out; the overload benchmark reports batcher against both.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from benchmarks.harness import KEY


async def _drain(url: str, bodies: list[bytes], cap: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def caller() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                while True:  # a refusal (it never comes at exactly the cap) is sent again
                    async with session.post(url, data=body, headers=headers) as answer:
                        await answer.read()
                        if answer.status == 200:
                            break

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(cap)))
        return len(bodies) / (time.perf_counter() - start)


def lines_per_second(relay_url: str, source: Path, cap: int) -> float:
    """Lines/s of the input file's chat lines sent with exactly ``cap`` calls in flight."""
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    bodies = [json.dumps(row["body"]).encode() for row in rows]
    return asyncio.run(_drain(relay_url + "/chat/completions", bodies, cap))
