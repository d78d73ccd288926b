"""The pace of a job as ``batcher status`` sees it from outside the processes that run it.

The calls and tokens of the last ``RECENT_S`` seconds and the throttled calls so far come from the
store's attempt rows (every worker writes them); the limit in force from where the pace lives:
the shared limiter's Redis for a job run by workers, the learned paces in the store for one run
in a process, else ``--rpm``. The concurrency each worker found is not visible from here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from jobs import store as q
from jobs.db import Store
from jobs.errors import BatcherError
from jobs.models import utcnow
from jobs.options import RunMode
from jobs.settings import Settings
from workers.aimd import ceiling_of
from workers.client import client_config
from workers.pace import PaceSnapshot, limit_in_force
from workers.ratelimit import Limits, PaceView

RECENT_S = 10.0


def take_pace(store: Store, settings: Settings, job_id: int) -> PaceSnapshot:
    """The job's pace now, across every process running it."""
    with store.session() as session:
        job = q.get_job(session, job_id)
        options = q.job_options(session, job_id)
        recent = q.recent_calls(session, job_id, since=utcnow() - timedelta(seconds=RECENT_S))
        running = q.state_counts(session, job_id)["running"]
        models = q.job_models(session, job_id)
    mode = RunMode.CELERY if job.mode == RunMode.CELERY else RunMode.EMBEDDED
    views = limiter_views(store, settings, models, options.rpm, mode=mode)
    limit, source = limit_in_force(views)
    return PaceSnapshot(
        requests_per_s=recent.calls / RECENT_S,
        tokens_per_s=recent.tokens / RECENT_S,
        limit_rps=limit,
        limit_source=source,
        in_flight=running,
        concurrency=None,
        ceiling=options.concurrency_in(mode),
        rate_limited=recent.rate_limited,
        overloaded=recent.overloaded,
        cooldowns=sum(v.decreases for v in views.values()),
        cooldown_s=max((v.cooldown_s for v in views.values()), default=0.0),
    )


def limiter_views(
    store: Store, settings: Settings, models: list[str], rpm: float | None, *, mode: RunMode
) -> dict[str, PaceView]:
    """Each model's pace: shared in Redis for workers, else learned, else configured."""
    try:
        provider = client_config(settings).provider
    except BatcherError:
        return {}
    keys = {f"{provider}|{model}": model for model in models}
    if mode is RunMode.CELERY:
        try:
            return asyncio.run(_shared(settings.effective_redis_url, list(keys), rpm))
        except BatcherError:
            pass  # Redis is down: fall back to what the store knows
    with store.session() as session:
        learned = q.learned_paces(session, provider)
    ceiling = ceiling_of(rpm)
    views = {}
    for key, model in keys.items():
        rate = learned.get(model)
        if rate is not None:
            views[key] = PaceView(min(rate, ceiling) if ceiling else rate, ceiling, True, 0.0, 0)
        elif ceiling is not None:
            views[key] = PaceView(ceiling, ceiling, False, 0.0, 0)
    return views


async def _shared(redis_url: str, keys: list[str], rpm: float | None) -> dict[str, PaceView]:
    from workers.redis_limiter import RedisLimiter

    limiter = RedisLimiter.from_url(redis_url, Limits(rpm=rpm))
    try:
        return {key: await limiter.pace(key) for key in keys}
    finally:
        await limiter.aclose()
