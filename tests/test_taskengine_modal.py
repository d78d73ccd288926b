"""A Midjourney task's modal step: its own charged call (``mj_modal``), sent once, its mark durable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select

from batcher.usage import usage_report
from jobs import store as q
from jobs.db import Store
from jobs.models import Task
from tests.helpers import all_attempts, all_lines, batch_line
from tests.taskfake import PRICES, FakeRelay, FakeTask
from tests.test_taskengine import by_id, engine_for, ingest, run
from workers.prices import ListPrice, PriceBook
from workers.taskcalls import UNKNOWN_MESSAGE

BOOK = PriceBook(prices={m: ListPrice(per_call=usd) for m, usd in PRICES.items()})


def modal_line(step_prompt: str = "zoom --zoom 2") -> dict[str, Any]:
    return batch_line("m", "/mj/submit/imagine", {"prompt": "a modal cat", "modal": {"prompt": step_prompt}})


def modal_submits(relay: FakeRelay) -> list[dict[str, Any]]:
    return [s for s in relay.submits if s["path"].endswith("/modal")]


def task_row(store: Store) -> Task:
    with store.session() as session:
        return session.exec(select(Task)).one()


def test_the_modal_step_is_an_attempt_of_its_own_priced_as_mj_modal(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [modal_line()])
    run(store, job_id, engine_for(store, job_id, relay))
    submit, step = sorted(all_attempts(store), key=lambda a: a.attempt_no)
    assert (submit.outcome, submit.price_key, step.outcome, step.price_key) == (
        "ok",
        None,
        "step",
        "mj_modal",
    )
    assert step.calls == 1 and step.status_code == 200
    report = usage_report(store, [job_id], prices=BOOK)
    assert relay.billed == PRICES["mj_imagine"] + PRICES["mj_modal"]
    assert report.total.cost == relay.billed and report.total.calls == 2
    assert report.total.unknown_calls == 0 and report.total.tokens["duplicate"].calls == 0


def test_a_modal_step_without_an_answer_fails_the_line_unknown_and_is_never_sent_again(
    store: Store, tmp_path: Path
) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [modal_line("zoom --zoom 2 lost")])
    run(store, job_id, engine_for(store, job_id, relay))
    line = all_lines(store)[0]
    assert (line.state, line.error_code, line.last_error) == ("failed", "submit_unknown", UNKNOWN_MESSAGE)
    assert task_row(store).modal == "submitting"
    report = usage_report(store, [job_id], prices=BOOK)
    assert report.total.unknown_calls == 2  # the task (not refunded yet) and its step: possibly billed
    assert report.total.unknown_cost == PRICES["mj_imagine"] + PRICES["mj_modal"]
    with store.session() as session:
        q.start_job(session, job_id)
    run(store, job_id, engine_for(store, job_id, relay))  # a resume does not send it again
    assert len(modal_submits(relay)) == 1 and len(relay.submits) == 2


def test_a_process_killed_during_the_modal_step_leaves_it_unknown(store: Store, tmp_path: Path) -> None:
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [modal_line()])
    line = all_lines(store)[0]
    with store.session() as session:  # the modal step's mark was committed, then the process died
        session.add(Task(request_id=line.id, job_id=job_id, state="submitted", relay_task_id="7",
                         submitted_at=1.0, next_poll_at=1.0, modal="submitting", modal_at=2.0))  # fmt: skip
    run(store, job_id, engine_for(store, job_id, relay))
    assert relay.submits == [] and relay.polls == []
    assert all_lines(store)[0].error_code == "submit_unknown"
    step = next(a for a in all_attempts(store) if a.price_key == "mj_modal")
    assert step.status_code is None and step.sent


def test_retry_unknown_polls_first_and_counts_a_step_that_went(store: Store, tmp_path: Path) -> None:
    """The step's answer was lost but the relay took it: the retry follows the task, sends nothing."""
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [modal_line("zoom --zoom 2 lost")])
    run(store, job_id, engine_for(store, job_id, relay))
    with store.session() as session:
        assert q.retry_failed(session, job_id, unknown=True) == 1
        q.start_job(session, job_id)
    run(store, job_id, engine_for(store, job_id, relay))
    assert len(relay.submits) == 2  # the imagine once, the modal step once
    assert by_id(store)["m"].state == "succeeded" and task_row(store).modal == "taken"


def test_retry_unknown_sends_a_step_that_never_went_again(store: Store, tmp_path: Path) -> None:
    """The connection broke before the relay read the step: the task is still MODAL, the step goes again."""
    relay = FakeRelay()
    job_id = ingest(store, tmp_path, [modal_line("zoom --zoom 2 dropped")])
    run(store, job_id, engine_for(store, job_id, relay))
    assert all_lines(store)[0].error_code == "submit_unknown"
    with store.session() as session:
        q.retry_failed(session, job_id, unknown=True)
        q.start_job(session, job_id)
    relay.submits.clear()

    class Mended(FakeRelay):
        def handle(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/modal"):
                request = httpx.Request(
                    "POST", request.url, content=request.content.replace(b" dropped", b"")
                )
            return super().handle(request)

    mended = Mended(tasks=relay.tasks, charged=relay.charged, _ids=relay._ids)
    run(store, job_id, engine_for(store, job_id, mended))
    assert [s["path"] for s in mended.submits] == ["/mj/submit/modal"]  # not the imagine again
    assert by_id(store)["m"].state == "succeeded"
    report = usage_report(store, [job_id], prices=BOOK)
    assert report.total.cost == mended.billed == PRICES["mj_imagine"] + PRICES["mj_modal"]


class LaggingModal(FakeRelay):
    """A relay whose task rows still say MODAL for two polls after the step (new-api refreshes them
    every 15 s), and whose step answers with the same task id."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/mj/submit/modal"):
            return super().handle(request)
        body = httpx.Response(200, content=request.content).json()
        self.submits.append({"path": request.url.path, **body})
        origin = self.tasks[str(body["taskId"])]
        origin.polls = -2  # two more MODAL answers, then the usual lifecycle
        self.charged.append((origin.id, PRICES["mj_modal"]))
        return httpx.Response(200, json={"code": 1, "description": "提交成功", "result": origin.id})

    def _mj_view(self, task: FakeTask) -> dict[str, Any]:
        if task.polls < 0:
            task.polls += 1
            task.modal_done = task.polls == 0
            return {"id": task.id, "status": "MODAL", "progress": "0%", "failReason": ""}
        return super()._mj_view(task)


def test_a_task_still_modal_after_its_step_is_polled_not_sent_again(store: Store, tmp_path: Path) -> None:
    relay = LaggingModal()
    job_id = ingest(store, tmp_path, [modal_line()])
    run(store, job_id, engine_for(store, job_id, relay))
    assert len(modal_submits(relay)) == 1 and by_id(store)["m"].state == "succeeded"
    assert usage_report(store, [job_id], prices=BOOK).total.cost == relay.billed
