"""The Celery app: built by a factory from settings, never at import; `-A workers.app` still finds it."""

from __future__ import annotations

import importlib

import pytest
from celery.app.utils import find_app

import workers.app
from jobs.settings import load_settings
from workers.app import QUEUE_NAMES, TASK_NAME, default_app, make_app


def test_importing_the_module_reads_no_settings() -> None:
    def refuse() -> None:
        raise AssertionError("settings were read at import")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("jobs.settings.load_settings", refuse)
        importlib.reload(workers.app)  # would raise if the module built its app on import
        assert workers.app.default_app.cache_info().currsize == 0
    importlib.reload(workers.app)


def test_the_celery_command_line_finds_the_default_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHER_BROKER_URL", "redis://127.0.0.1:1/5")
    importlib.reload(workers.app)
    app = find_app("workers.app")  # what `celery -A workers.app` does
    assert app is workers.app.default_app()
    assert app.conf.broker_url == "redis://127.0.0.1:1/5"
    importlib.reload(workers.app)


def test_make_app_takes_its_settings_and_knows_the_task() -> None:
    import workers.tasks  # noqa: F401  (registers the shared task)

    app = make_app(load_settings(broker_url="redis://127.0.0.1:1/7"))
    assert app.conf.broker_url == "redis://127.0.0.1:1/7"
    assert TASK_NAME in app.tasks
    assert [q.name for q in app.conf.task_queues] == QUEUE_NAMES
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app is not default_app()
