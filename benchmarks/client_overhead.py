"""Client CPU per request: httpx's own async transport vs httpx over aiohttp vs plain aiohttp.

Runs a minimal JSON server in a subprocess (so its CPU is not counted), then sends N requests at
a fixed concurrency from this process with each client and reports this process's CPU time per
request. This is the overhead batcher adds per call before any business logic.

    python -m benchmarks.client_overhead --requests 5000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

BODY = (
    b'{"object":"list","data":[{"index":0,"embedding":[0.1,0.2,0.3]}],'
    b'"usage":{"prompt_tokens":3,"total_tokens":3}}'
)
PAYLOAD = b'{"model":"m","input":"hello world"}'


def _serve(port: int) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drive(send: Callable[[], Awaitable[None]], n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await send()

    await asyncio.gather(*(one() for _ in range(n)))


async def run_httpx(url: str, n: int, c: int, transport: httpx.AsyncBaseTransport | None) -> None:
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=30) as client:

        async def send() -> None:
            r = await client.post(url, content=PAYLOAD, headers={"Content-Type": "application/json"})
            r.json()

        await _drive(send, n, c)


async def run_aiohttp(url: str, n: int, c: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def send() -> None:
            async with session.post(url, data=PAYLOAD, headers={"Content-Type": "application/json"}) as r:
                await r.json()

        await _drive(send, n, c)


def measure(label: str, factory: Callable[[], Awaitable[None]]) -> tuple[str, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(factory())  # type: ignore[arg-type]
    return label, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    time.sleep(1.0)
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    n, c = args.requests, args.concurrency
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    results = [
        measure("httpx (default transport)", lambda: run_httpx(url, n, c, None)),
        measure(
            "httpx + AiohttpTransport (batcher)",
            lambda: run_httpx(url, n, c, AiohttpTransport(limits=limits)),
        ),
        measure("aiohttp (reference)", lambda: run_aiohttp(url, n, c)),
    ]
    server.terminate()
    print(f"{n} requests, concurrency {c}; client CPU only (server in another process)\n")
    print(f"{'client':38} {'CPU ms/request':>15} {'requests/s':>11}")
    for label, cpu, wall in results:
        print(f"{label:38} {cpu / n * 1000:15.3f} {n / wall:11.0f}")
    print(f"\nreproduce: python -m benchmarks.client_overhead --requests {n} --concurrency {c}")


if __name__ == "__main__":
    main()
