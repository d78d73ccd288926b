"""The Celery application: settings that keep the SQL store the source of truth.

``make_app(settings)`` builds an app from settings passed in; nothing is built when the module is
imported. ``celery -A workers.app worker`` (and Flower, and ``batcher worker``) ask the module for
its ``app`` attribute: that one, ``default_app()``, is built on first use from this process's
settings. Each setting, and why:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only once its
  lines are recorded or about to go (``workers.handover``: its last calls drain while the next
  message is claimed); a worker that dies mid-task gives the message back instead of losing it,
  and the lines of calls still draining are leased, so the sweeper takes them back.
- ``worker_prefetch_multiplier=1``: a worker reserves one message per process, so a slow worker
  does not sit on chunks that idle workers could run.
- JSON only (``accept_content=["json"]``): a pickled message is refused, never executed.
- Results ignored: the SQL store holds every result; a result backend would be a second truth.
- ``visibility_timeout`` (1 h) well above the task's hard time limit (15 min): Redis redelivers an
  unacknowledged message only after it, so a long chunk is never run twice while still alive.
- ``unacked_restore_interval=2`` / ``unacked_restore_throttle=1``: workers look for messages of
  dead workers every 2 s instead of kombu's ~100 s, so they come back as soon as they are due.
  Lines of a dead worker come back sooner still: their SQL lease (60 s, renewed while alive)
  runs out and the sweeper enqueues them again (``workers.dispatch``).
- One queue per endpoint kind, so a slow TTS job does not starve embeddings; Redis priority
  steps 0-9 order jobs within a queue.
- No ``rate_limit``: it is per worker. The shared limiter is in Redis (``workers.redis_limiter``).
- Log lines carry an ISO date and time, the level and the process; batcher's own lines name the
  job (``job 3: ...``) so a log of many jobs can be searched by job.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from jobs.endpoints import Endpoint
from jobs.settings import Settings, load_settings
from workers.endpoints import families, family_of
from workers.redact import LOG_FORMAT

TASK_LOG_FORMAT = "[%(asctime)s %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
QUEUE_PREFIX = "batcher."
TASK_NAME = "batcher.run_lines"
TASK_HARD_TIME_LIMIT_S = 900
TASK_SOFT_TIME_LIMIT_S = 840
VISIBILITY_TIMEOUT_S = 3600


def queue_name(endpoint: Endpoint) -> str:
    """The queue of an endpoint's family: ``batcher.chat``, ``batcher.embeddings``, ..."""
    return QUEUE_PREFIX + family_of(endpoint).name


TASKS_QUEUE = QUEUE_PREFIX + "tasks"  # task lines' polls (``workers.taskchunk``), due after a countdown
QUEUE_NAMES = [QUEUE_PREFIX + f.name for f in families()] + [TASKS_QUEUE]


def make_app(settings: Settings) -> Celery:
    """A Celery app on the configured broker with the settings above."""
    app = Celery("batcher", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_time_limit=TASK_HARD_TIME_LIMIT_S,
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT_S,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUE_NAMES],
        task_default_queue=QUEUE_NAMES[0],
        task_default_priority=5,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        },
        worker_send_task_events=True,  # Flower shows tasks live
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_log_format=LOG_FORMAT,
        worker_task_log_format=TASK_LOG_FORMAT,
    )
    return app


@functools.cache
def default_app() -> Celery:
    """The app of this process's settings (the environment), built once, on first use."""
    return make_app(load_settings())


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` looks the app up as a module attribute: build it when asked.
    if name == "app":
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
