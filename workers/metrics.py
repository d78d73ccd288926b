"""Prometheus metrics of the API calls a process makes: off until a command turns them on.

``batcher run --metrics-port N`` serves them from its own process. A Celery worker started with
``BATCHER_METRICS_PORT`` (``batcher worker --metrics-port N``) runs in prometheus_client's
multiprocess mode: every pool process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
and the worker's main process serves their sum (``start_worker_server``). That folder must be
set before prometheus_client is first imported in the main process, so the children forked from
it write files too: this module imports prometheus_client only when metrics are turned on, and
``batcher worker`` sets the folder before starting Celery.

The metrics, labelled by endpoint and model (and HTTP status, or ``none`` for a call that got
no answer): calls, calls answered 429, retries, call latency (histogram), tokens by kind,
cost (USD at the job's prices, else the built-in ones), lines finished by state, calls in
flight, the pace in force (requests/s the limiter allows per model) and the concurrency found.
An ``Observer`` is one executor's handle on them; with metrics off there is none, and the
executor's hooks cost one ``is None`` check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from jobs.errors import BatcherError
from jobs.records import AttemptRecord, LineResult, Usage, WorkItem
from workers.cost import cost_of_attempt
from workers.prices import PriceBook, load_prices
from workers.ratelimit import PaceView

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV = "BATCHER_METRICS_PORT"
HOST_ENV = "BATCHER_METRICS_HOST"
DEFAULT_HOST = "127.0.0.1"
# Seconds: relay calls take from tens of milliseconds (embeddings) to minutes (long chat answers).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Metrics:
    """The process's metric objects (prometheus_client's, so typed loosely)."""

    registry: Any  # None in multiprocess mode: the files are the registry
    calls: Any
    rate_limited: Any
    retries: Any
    latency: Any
    tokens: Any
    cost: Any
    lines: Any
    in_flight: Any
    pace: Any
    concurrency: Any


@dataclass
class _State:
    """The process's metrics and the server showing them, if any."""

    metrics: Metrics | None = None
    server: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def multiprocess() -> bool:
    """Whether this process writes its values to the multiprocess folder."""
    return bool(os.environ.get(MULTIPROC_ENV))


def enable() -> Metrics:
    """Turn metrics on in this process (once; fresh counters in a process that is not a worker's)."""
    with _state.lock:
        if _state.metrics is None or not multiprocess():
            _state.metrics = _build()
        return _state.metrics


def current() -> Metrics | None:
    """The process's metrics, if turned on."""
    return _state.metrics


def _build() -> Metrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = None if multiprocess() else CollectorRegistry()
    labels = ("endpoint", "model")
    return Metrics(
        registry=registry,
        calls=Counter("batcher_calls", "HTTP calls made to the API.", (*labels, "status"), registry=registry),
        rate_limited=Counter("batcher_rate_limited", "Calls answered 429.", labels, registry=registry),
        retries=Counter("batcher_retries", "Calls that will be made again.", labels, registry=registry),
        latency=Histogram(
            "batcher_call_duration_seconds", "Time from sending a call to its answer.", labels,
            buckets=LATENCY_BUCKETS, registry=registry,
        ),
        tokens=Counter("batcher_tokens", "Tokens answers reported.", (*labels, "kind"), registry=registry),
        cost=Counter("batcher_cost_usd", "USD of answered calls at its prices.", labels, registry=registry),
        lines=Counter("batcher_lines", "Lines finished, by state.", ("state",), registry=registry),
        in_flight=Gauge(
            "batcher_calls_in_flight", "Calls sent and not answered yet.", registry=registry,
            multiprocess_mode="livesum",
        ),
        pace=Gauge(
            "batcher_pace_requests_per_second", "Requests/s the rate limiter allows now.", ("model",),
            registry=registry, multiprocess_mode="livemax",
        ),
        concurrency=Gauge(
            "batcher_concurrency", "Calls in flight allowed now (found under the ceiling).",
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )  # fmt: skip


def serve(port: int, host: str = DEFAULT_HOST) -> Any:
    """Serve this process's metrics on ``host:port`` in a thread; return the server."""
    from prometheus_client import start_http_server

    metrics = enable()
    _state.server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return _state.server


def start_worker_server(port: int, host: str = DEFAULT_HOST) -> Any:
    """Serve the sum of every process's files in the multiprocess folder (a worker's main process)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    _state.server, _ = start_http_server(port, addr=host, registry=registry)
    return _state.server


def stop_server() -> None:
    """Stop the server ``serve`` or ``start_worker_server`` started, if any."""
    if _state.server is not None:
        _state.server.shutdown()
        _state.server.server_close()
        _state.server = None


def prepare_folder(folder: Path) -> Path:
    """Empty the multiprocess folder of an earlier worker (its values would be added) and name it."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def process_died(pid: int) -> None:
    """A pool process ended: its live gauges no longer count."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Observer:
    """One executor's hooks into the metrics, with the prices of its job.

    The recorder tells it of each call as it leaves (``sending``) and of each attempt row and
    line result it buffers. A call's attempt rows come one after another (the lines of a pack),
    so the first row of a new call id is that call coming back.
    """

    def __init__(self, metrics: Metrics, prices: PriceBook, group_ratio: Decimal) -> None:
        self.m, self.prices, self.ratio = metrics, prices, group_ratio
        self._leaving: dict[str, tuple[str, str]] = {}  # call id -> (endpoint, model), in flight
        self._call: tuple[str | None, tuple[str, str]] = (None, ("", ""))  # the call being recorded

    def sending(self, call_id: str, items: Sequence[WorkItem]) -> None:
        """A call leaves with these lines."""
        self._leaving[call_id] = (items[0].endpoint.path, items[0].model)
        self.m.in_flight.inc()

    def recorded(self, attempt: AttemptRecord) -> None:
        """One attempt row: the call's answer on its first row, tokens and cost on each."""
        call_id, labels = self._call
        if attempt.call_id != call_id or attempt.call_id is None:
            labels = self._leaving.pop(attempt.call_id or "", ("unknown", "unknown"))
            self._call = (attempt.call_id, labels)
            self._came_back(labels, attempt)
        if attempt.usage is not None:
            self._used(labels, attempt.usage)

    def _came_back(self, labels: tuple[str, str], attempt: AttemptRecord) -> None:
        status = attempt.status_code
        self.m.in_flight.dec()
        self.m.calls.labels(*labels, str(status) if status is not None else "none").inc()
        self.m.latency.labels(*labels).observe(attempt.duration_ms / 1000)
        if status == 429:
            self.m.rate_limited.labels(*labels).inc()

    def _used(self, labels: tuple[str, str], usage: Usage) -> None:
        self.m.tokens.labels(*labels, "prompt").inc(usage.prompt_tokens)
        self.m.tokens.labels(*labels, "completion").inc(usage.completion_tokens)
        cost = cost_of_attempt(usage, self.prices.lookup(labels[1]), group_ratio=self.ratio)
        if cost is not None:
            self.m.cost.labels(*labels).inc(float(cost))

    def finished(self, result: LineResult) -> None:
        """A line reached a terminal state."""
        self.m.lines.labels(result.state).inc()

    def retrying(self, endpoint: str, model: str) -> None:
        """A unit's lines will be called again."""
        self.m.retries.labels(endpoint, model).inc()

    def paced(self, views: dict[str, PaceView], concurrency: int) -> None:
        """The limiter's pace per model (keys are provider|model) and the concurrency found."""
        for key, view in views.items():
            if view.rate is not None:
                self.m.pace.labels(key.split("|", 1)[-1]).set(view.rate)
        self.m.concurrency.set(concurrency)


def observer_for(prices: Sequence[str], group: str | None) -> Observer | None:
    """An executor's observer when metrics are on (the job's price files, else the built-in prices).

    A worker's pool process turns them on here, at its first chunk, when its main process serves
    them (``PROMETHEUS_MULTIPROC_DIR`` set): no Celery signal is needed for a process to count.
    """
    metrics = current() or (enable() if multiprocess() else None)
    if metrics is None:
        return None
    try:
        book = load_prices([Path(p) for p in prices])
    except BatcherError:  # a price file that moved must not stop the job: built-in prices then
        book = load_prices([])
    return Observer(metrics, book, book.group_ratio(group))
