"""Celery tasks and the worker's background sweeper; thin shells over ``workers.chunk`` and
``workers.dispatch``.

Per-process resources (the store's engine, the settings) are built on first use in the process
that uses them and rebuilt after a fork, so a prefork child never shares its parent's database
connections.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import redis
from celery import shared_task
from celery.signals import after_setup_logger, worker_init, worker_process_init, worker_process_shutdown

from jobs.db import Store, open_store
from jobs.settings import Settings, load_settings
from workers import metrics
from workers.app import TASK_NAME
from workers.chunk import run_chunk
from workers.client import NO_KEY_WARNING
from workers.dispatch import celery_publisher, sweep_all, take_sweep_turn
from workers.journal import journal_dir
from workers.leases import new_owner
from workers.redact import install_log_redaction
from workers.runtime import WorkerRuntime
from workers.stats import Stats

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 5.0
DRAIN_S = 30.0  # a pool process's shutdown waits this long for chunks' last calls


@dataclass
class _Resources:
    pid: int
    settings: Settings
    store: Store
    runtime: WorkerRuntime


_per_process: dict[str, _Resources] = {}


_resources_lock = threading.Lock()


def resources() -> _Resources:
    """This process's settings and store, built once per process (and anew after a fork).

    Locked: the sweeper thread and the task may ask at the same moment, and two runtimes would
    leave one's connections open and orphaned.
    """
    with _resources_lock:
        current = _per_process.get("resources")
        if current is None or current.pid != os.getpid():
            settings = load_settings()
            store = open_store(settings)
            current = _Resources(os.getpid(), settings, store, WorkerRuntime(settings.effective_redis_url))
            _per_process["resources"] = current
        return current


@shared_task(name=TASK_NAME, ignore_result=True)
def run_lines(job_id: int, request_ids: list[int]) -> dict[str, Any]:
    """Run one chunk of a job's lines (the message holds only ids); its last calls may still be
    draining when this returns (``workers.handover``), and its summary is logged when they end."""
    res = resources()
    log.info("job %s: running %d lines", job_id, len(request_ids))
    stats = run_chunk(
        res.store, res.settings, job_id, request_ids, runtime=res.runtime, owner=new_owner(),
        on_end=functools.partial(_log_end, job_id),
    )  # fmt: skip
    return {
        "job_id": job_id,
        "calls": stats.calls,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "released": stats.released,
    }


def _log_end(job_id: int, stats: Stats) -> None:
    if stats.halted:
        log.warning("job %s: stopped early, %d lines given back: %s", job_id, stats.released, stats.halted)
    log.info(
        "job %s: %d succeeded, %d failed, %d given back; %d calls",
        job_id, stats.succeeded, stats.failed, stats.released, stats.calls,
    )  # fmt: skip


class Sweeper(threading.Thread):
    """Sweeps every running distributed job every few seconds; one process at a time holds the lock."""

    def __init__(self, interval: float = SWEEP_INTERVAL_S) -> None:
        super().__init__(name="batcher-sweeper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # the sweeper must outlive a passing Redis or database outage
                log.warning("sweep failed; trying again in %.0f s", self.interval, exc_info=True)

    def sweep_once(self) -> None:
        res = resources()
        client = redis.Redis.from_url(res.settings.broker_url, socket_connect_timeout=5, socket_timeout=10)
        try:
            if take_sweep_turn(client, new_owner(), hold_ms=int(self.interval * 2000)):
                journals = journal_dir(res.settings.home)
                report = sweep_all(res.store, celery_publisher(), client, journals=journals)
                if report.enqueued:
                    jobs = ", ".join(str(j) for j in report.job_ids)
                    log.info(
                        "sweeper: job %s: %d expired leases, %d lines enqueued",
                        jobs, report.expired, report.enqueued,
                    )  # fmt: skip
        finally:
            client.close()


_sweepers: list[Sweeper] = []


@after_setup_logger.connect
def _redact_logs(**_: Any) -> None:
    settings = load_settings()
    install_log_redaction(settings.secret_values())
    if settings.api_key is None:
        log.warning(NO_KEY_WARNING.removeprefix("warning: "))


@worker_process_init.connect
def _start_sweeper(**_: Any) -> None:
    # In each pool process, never in the main one: the main process forks new pool processes,
    # and a fork taken while a thread holds a lock (logging, a connection pool) deadlocks the child.
    sweeper = Sweeper()
    _sweepers.append(sweeper)
    sweeper.start()


@worker_process_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    current = _per_process.get("resources")
    # Lines still in calls would otherwise wait out their lease (another host) or the sweeper.
    if current is not None and current.pid == os.getpid() and (left := current.runtime.drain(DRAIN_S)):
        log.warning("%d chunks still had calls going at shutdown; their lines come back", left)
    for sweeper in _sweepers:
        sweeper.stopped.set()
    metrics.process_died(os.getpid())  # its live gauges (calls in flight) no longer count


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    # The main process, before it forks the pool: the folder the pool processes write their values
    # to is set here, so they inherit it; the main process serves their sum. The server's thread
    # takes no lock a pool process could need.
    port = os.environ.get(metrics.PORT_ENV)
    if not port:
        return
    if not metrics.multiprocess():
        metrics.prepare_folder(load_settings().home / "metrics" / f"worker-{os.getpid()}")
    host = os.environ.get(metrics.HOST_ENV, metrics.DEFAULT_HOST)
    metrics.start_worker_server(int(port), host)
    log.info("metrics of every pool process on http://%s:%s/metrics", host, port)
