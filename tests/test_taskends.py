"""A task line's end: written once, with its attempts, and a refused submit's row only with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from jobs import store as q
from jobs.db import Store
from jobs.models import Task
from tests.helpers import all_lines, batch_line
from tests.taskfake import FakeRelay
from tests.test_taskengine import engine_for, ingest, run


class Died(Exception):
    """The process died here."""


def test_a_crash_after_a_refusal_does_not_send_the_submit_again(store: Store, tmp_path: Path) -> None:
    """The refusal's answer came, and the process died before the line's end was written: its
    ``submitting`` row is still there, so the next run ends it unknown instead of sending it again."""
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [batch_line("b", "/mj/submit/imagine", {"prompt": "a banned cat"})])
    first = engine_for(store, job_id, relay)

    def die(*_: Any, **__: Any) -> None:
        raise Died

    first.rows.end = die  # type: ignore[method-assign]
    with pytest.raises(Died):
        run(store, job_id, first)
    line_id = all_lines(store)[0].id or 0
    with store.session() as session:
        assert session.exec(select(Task)).one().state == "submitting"
        q.release_lines(session, [line_id], owner=first.config.owner)
    run(store, job_id, engine_for(store, job_id, relay))
    assert len(relay.submits) == 1
    assert all_lines(store)[0].error_code == "submit_unknown"


def test_a_refused_submit_leaves_no_task_row(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [batch_line("b", "/mj/submit/imagine", {"prompt": "a banned cat"})])
    run(store, job_id, engine_for(store, job_id, relay))
    line = all_lines(store)[0]
    assert (line.state, line.error_code) == ("failed", "refused")
    with store.session() as session:
        assert session.exec(select(Task)).all() == []
