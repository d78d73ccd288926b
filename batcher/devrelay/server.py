"""Ways to run the stand-in relay: in the running loop (``serve``), on a thread for synchronous
tests (``RelayServer``), and until Ctrl-C for ``batcher dev-relay`` (``run_forever``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from batcher.devrelay.config import RelayConfig
from batcher.devrelay.relay import Relay

T = TypeVar("T")


@dataclass
class RunningRelay:
    """A relay listening inside the current event loop; ``close`` it when done."""

    relay: Relay
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        """Cancel handlers still running (hangs), then stop listening and close connections."""
        tasks = [t for t in self.relay.inflight if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.cleanup()


async def serve(config: RelayConfig, host: str = "127.0.0.1", port: int = 0) -> RunningRelay:
    """Start a relay in the running loop; port 0 picks a free port (see ``.url``)."""
    relay = Relay(config)
    runner = web.AppRunner(relay.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    # Image URLs name another origin than the API (localhost, not 127.0.0.1), as a CDN would:
    # a client must fetch them without the key.
    relay.origin = f"http://{'localhost' if host == '127.0.0.1' else host}:{bound}"
    return RunningRelay(relay, runner, f"http://{host}:{bound}/v1")


class RelayServer:
    """A relay on its own thread and event loop, for synchronous tests: ``with RelayServer() as r:``."""

    def __init__(self, config: RelayConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._config = config or RelayConfig()
        self._host, self._port = host, port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running: RunningRelay | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL including ``/v1``, e.g. ``http://127.0.0.1:54321/v1``."""
        return self._live().url

    def start(self) -> RelayServer:
        """Start the thread and return once the port is listening."""
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="devrelay", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    async def _main(self) -> None:
        try:
            self._running = await serve(self._config, self._host, self._port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._running.close()

    def stop(self) -> None:
        """Cancel hanging handlers, close every connection and join the thread."""
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
            self._loop = None

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_stats`` returns them (but with int status and second keys)."""
        return self._on_loop(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        return self._live().relay.snapshot()

    def in_flight(self) -> int:
        """How many calls it is answering now (received, not yet answered)."""
        return self._on_loop(lambda: len(self._live().relay.inflight))

    def reset(self) -> None:
        """Zero the counters and marker counts (``POST /_reset``)."""
        self._on_loop(self._live().relay.reset)

    def advance_tasks(self, seconds: float) -> None:
        """Move the async tasks' clock forward: their stages, deadlines and refunds follow."""
        self._on_loop(lambda: self._live().relay.tasks.advance(seconds))

    def release_hangs(self) -> None:
        """Answer the calls held by a hang now (see ``Relay.release_hangs``)."""
        self._on_loop(self._live().relay.release_hangs)

    def set_config(self, config: RelayConfig) -> None:
        """Change latency, faults, limits or key from the next request on."""
        self._on_loop(lambda: self._live().relay.set_config(config))

    def _live(self) -> RunningRelay:
        if self._running is None or self._loop is None:
            raise RuntimeError("the relay is not running: use `with RelayServer() as relay:` or .start()")
        return self._running

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the relay's loop: the counters are only touched from that thread."""

        async def run() -> T:
            return fn()

        self._live()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_forever(config: RelayConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until Ctrl-C, after printing the URL and the environment to point batcher at it."""
    try:
        asyncio.run(_forever(config, host, port))
    except KeyboardInterrupt:
        print("dev relay stopped")


async def _forever(config: RelayConfig, host: str, port: int) -> None:
    running = await serve(config, host, port)
    try:
        print(f"dev relay listening on {running.url}  (stats: {running.url.removesuffix('/v1')}/_stats)")
        print(f"  export OPENAI_BASE_URL={running.url} OPENAI_API_KEY={config.api_key or 'sk-dev'}")
        await asyncio.Event().wait()
    finally:
        await running.close()
