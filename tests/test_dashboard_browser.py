"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

A live ``batcher dashboard`` process serves a store in which ``batcher run`` (another process) is
running a job against the stand-in relay (paced by its limit, so some calls get 429s). The tests
look at what a person sees: the progress bar moving, a failed line's error, the chart and its data,
an export downloaded and parsed, pausing that stops new calls; and a dashboard bound beyond
loopback refusing a request without its token. They run in file order over the one job; pausing
is last. Chromium comes from the distribution (``.ci/run`` installs it): no browser download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from batcher.devrelay import RelayConfig, RelayServer
from jobs.db import Store
from jobs.models import Attempt, Job
from tests.conftest import unavailable
from tests.helpers import RELAY_KEY, batch_line, write_jsonl
from tests.services import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LINES = 1000
FAILING_LINE = 3  # its text carries a marker: the relay refuses it, every time
pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


@dataclass
class Live:
    url: str
    store: Store
    relay: RelayServer
    run: subprocess.Popen[bytes]
    folder: Path

    def calls(self) -> int:
        with self.store.session() as s:
            return len({a.call_id for a in s.exec(select(Attempt))})

    def job(self) -> Job:
        with self.store.session() as s:
            job = s.get(Job, 1)
            assert job is not None
            return job


def _env(folder: Path, relay: RelayServer, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHER_", "OPENAI_"))}
    return env | {
        "BATCHER_HOME": str(folder / "home"),
        "BATCHER_DATABASE_URL": db_url,
        "BATCHER_BROKER_URL": "redis://127.0.0.1:1/0",
        "OPENAI_BASE_URL": relay.url,
        "OPENAI_API_KEY": RELAY_KEY,
        "BATCHER_PROGRESS_INTERVAL": "1",
    }


def start_dashboard(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """A ``batcher dashboard`` process; return it and the address it printed once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "batcher", "dashboard", "--port", str(port), *args]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, env=env, stderr=err)
    address = wait_for(lambda: re.search(r"on (http://\S+)", log.read_text()), "the dashboard's address", 60)
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), "the dashboard to answer", timeout=60)
    return proc, address.group(1)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("browser")
    rows = [
        batch_line(
            f"q{i}",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"line {i}" + (" [[fault:400]]" if i + 1 == FAILING_LINE else "")}]},
        )
        for i in range(LINES)
    ]  # fmt: skip
    source = write_jsonl(folder / "in.jsonl", rows)
    db_url = f"sqlite:///{folder / 'store.db'}"
    with RelayServer(RelayConfig(api_key=RELAY_KEY, latency=0.05, rps_limit=15)) as relay:
        env = _env(folder, relay, db_url)
        command = [
            sys.executable,
            "-m",
            "batcher",
            "run",
            str(source),
            "--max-in-flight",
            "4",
            "-o",
            str(folder / "out.jsonl"),
        ]
        with (folder / "run.log").open("wb") as log:
            run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        store = Store(db_url)
        dashboard = None
        try:
            wait_for(lambda: run.poll() is None and store_has_job(store), "the job to be stored", timeout=60)
            dashboard, url = start_dashboard(env, folder / "dashboard.log")
            yield Live(url, store, relay, run, folder)
        finally:
            _stop(run)
            if dashboard is not None:
                _stop(dashboard)
            store.close()


def store_has_job(store: Store) -> bool:
    with store.session() as s:
        return s.get(Job, 1) is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable("Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    yield tab
    context.close()


def done_shown(page: Any) -> int:
    return int(page.eval_on_selector("#bar", "el => Number(el.dataset.done || 0)"))


def test_progress_bar_moves_without_a_reload(page: Any, live: Live) -> None:
    page.goto(live.url + "jobs/1")
    page.wait_for_function(
        "() => Number(document.querySelector('#bar').dataset.done || 0) > 0", timeout=90_000
    )
    first = done_shown(page)
    width = page.eval_on_selector("#bar .seg.succeeded", "el => el.style.width")
    page.wait_for_function(
        f"() => Number(document.querySelector('#bar').dataset.done) > {first}", timeout=90_000
    )
    assert done_shown(page) > first
    assert page.eval_on_selector("#bar .seg.succeeded", "el => el.style.width") != width
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1  # no reload


def test_jobs_page_shows_the_job_moving(page: Any, live: Live) -> None:
    page.goto(live.url)
    row = 'tr[data-job="1"]'
    page.wait_for_selector(row)
    page.wait_for_function(
        f"() => /lines\\/s/.test(document.querySelector('{row} [data-field=rate]').textContent)",
        timeout=60_000,
    )
    assert page.text_content(f"{row} [data-field=status]") == "running"


def test_a_failed_lines_error_is_shown(page: Any, live: Live) -> None:
    page.goto(live.url + "jobs/1")
    row = f'#failures tr[data-line="{FAILING_LINE}"]'
    page.wait_for_selector(row, timeout=90_000)
    assert "invalid request" in page.text_content(row)
    page.click(f"{row} a")
    page.wait_for_selector("#raw-answer")
    assert "invalid_request_error" in page.text_content("#raw-answer")


def test_the_chart_renders_the_calls(page: Any, live: Live) -> None:
    page.goto(live.url + "jobs/1")
    page.wait_for_function("() => Number(document.querySelector('#chart .uplot')?.dataset.calls || 0) > 0")
    canvas = page.query_selector("#chart .uplot canvas")
    assert canvas is not None and canvas.bounding_box()["width"] > 300
    shown = int(page.eval_on_selector("#chart .uplot", "el => Number(el.dataset.calls)"))
    assert 0 < shown <= live.calls()
    assert "requests/s" in page.text_content("#chart")
    assert "429s" in page.text_content("#chart")


def test_cost_by_provider_is_drawn(page: Any, live: Live) -> None:
    """One relay, not routed: one row, "default", with the calls' tokens and cost and a full bar."""
    page.goto(live.url + "jobs/1")
    row = "#provider-costs tbody tr"
    page.wait_for_function(
        f"() => Number(document.querySelector('{row}')?.dataset.cost || 0) > 0", timeout=90_000
    )
    cells = page.eval_on_selector_all(f"{row}:first-child td", "tds => tds.map((td) => td.textContent)")
    assert cells[0] == "default" and int(cells[2].replace(",", "")) > 0 and cells[3].startswith("$")
    assert page.eval_on_selector(f"{row} .seg.succeeded", "el => parseFloat(el.style.width)") == 100


def test_an_export_downloads_and_parses(page: Any, live: Live) -> None:
    page.goto(live.url + "jobs/1")
    with page.expect_download() as info:
        page.click("a.download:text('JSONL')")
    path = live.folder / "download.jsonl"
    info.value.save_as(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows, "an export of a job under way has its finished lines"
    assert all(r["custom_id"].startswith("q") for r in rows)
    failed = [r for r in rows if r["error"]]
    assert [r["custom_id"] for r in failed] == [f"q{FAILING_LINE - 1}"]


def test_pausing_stops_new_calls(page: Any, live: Live) -> None:
    page.goto(live.url + "jobs/1")
    page.wait_for_selector("button[data-action=pause]")
    assert live.run.poll() is None, "the run is still going"
    page.click("button[data-action=pause]")
    page.wait_for_selector("#flash:text('paused')")
    page.wait_for_function("() => document.querySelector('#status').textContent === 'paused'")
    live.run.wait(timeout=60)  # the run sees the pause within a second and ends
    assert live.job().status == "paused"
    calls = live.relay.stats()["calls"]
    left = live.job()
    assert left.succeeded + left.failed < LINES  # it stopped before the end
    time.sleep(3)  # a window in which a run that kept going would have made dozens of calls
    assert live.relay.stats()["calls"] == calls
    # The chart's data settles on exactly the store's calls.
    page.wait_for_function(
        f"() => Number(document.querySelector('#chart .uplot').dataset.calls) === {live.calls()}",
        timeout=60_000,
    )


def test_beyond_loopback_a_request_without_the_token_is_refused(live: Live) -> None:
    env = _env(live.folder, live.relay, str(live.store.url))
    proc, address = start_dashboard(env, live.folder / "open.log", "--host", "0.0.0.0")
    try:
        token = address.split("?token=")[1]
        port = address.split(":")[2].split("/")[0]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/api/jobs/1").status_code == 401
        assert httpx.post(base + "/api/jobs/1/cancel").status_code == 401
        signed = httpx.get(f"{base}/?token={token}", follow_redirects=True)
        assert signed.status_code == 200 and 'data-job="1"' in signed.text
    finally:
        _stop(proc)
