"""build_executor: the one assembly of the execution core, for an embedded run and a worker's chunk."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from jobs import store as q
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.options import PLACEMENTS, JobOptions, RunMode
from jobs.settings import Settings, load_settings
from workers.build import build_executor
from workers.client import ApiClient, ClientConfig
from workers.ratelimit import InProcessLimiter, Limits


@pytest.fixture
def db(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    with store.session() as s:
        q.create_job(s, name="t", source_path="/t", source_sha256="x")
    return store


@pytest.fixture
def settings() -> Settings:
    return load_settings(base_url="http://relay.test/v1", api_key="sk-test-0123456789")


def build(db: Store, settings: Settings, options: JobOptions, mode: RunMode, **kw: object):  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}

    def client(config: ClientConfig) -> ApiClient:
        seen["client"] = config
        return ApiClient(config)

    def limiter(limits: Limits) -> InProcessLimiter:
        seen["limits"] = limits
        return InProcessLimiter(limits)

    executor = build_executor(db, settings, 1, options, mode=mode, client=client, limiter=limiter, **kw)  # type: ignore[arg-type]
    return executor, seen


@pytest.mark.parametrize("mode", list(RunMode))
def test_each_mode_gets_its_placement_defaults(db: Store, settings: Settings, mode: RunMode) -> None:
    executor, seen = build(db, settings, JobOptions(), mode)
    assert executor.config.concurrency == PLACEMENTS[mode].concurrency
    assert executor.config.lease_seconds == PLACEMENTS[mode].lease_seconds
    assert seen["client"].max_connections == PLACEMENTS[mode].concurrency  # type: ignore[attr-defined]


def test_options_reach_the_config_client_and_limiter(db: Store, settings: Settings) -> None:
    options = JobOptions(concurrency=9, rpm=60, tpm=1000, max_attempts=2, timeout=7, pack=False)
    executor, seen = build(db, settings, options, RunMode.EMBEDDED)
    assert (executor.config.concurrency, executor.config.max_attempts, executor.config.pack) == (9, 2, None)
    assert seen["limits"] == Limits(rpm=60, tpm=1000)
    assert seen["client"].timeout == 7  # type: ignore[attr-defined]
    assert executor.budget is None


def test_a_chunk_runs_no_more_calls_than_lines_and_keeps_its_owner(db: Store, settings: Settings) -> None:
    executor, _ = build(db, settings, JobOptions(), RunMode.CELERY, owner="host:1:abc", lines=3)
    assert executor.config.concurrency == 3
    assert executor.config.owner == "host:1:abc"
    assert executor.recorder.sink.owner == "host:1:abc"  # type: ignore[attr-defined]


def test_a_budget_needs_a_price_for_every_model(db: Store, settings: Settings) -> None:
    with db.session() as s:
        q.insert_requests(
            s,
            [{"job_id": 1, "custom_id": "a", "line_no": 1, "endpoint": "/v1/chat/completions", "model": "unpriced-x",
              "body": "{}", "est_tokens": 1, "state": "pending", "attempts": 0, "claims": 0, "usage_estimated": False}],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="unpriced-x"):
        build(db, settings, JobOptions(budget=Decimal(1)), RunMode.EMBEDDED)
