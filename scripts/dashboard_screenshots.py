"""Take the README's screenshots of the dashboard: ``.venv/bin/python scripts/dashboard_screenshots.py``.

Runs everything on loopback in a temporary folder: the stand-in relay (paced, some faults), one
finished job with a tag, one job running in ``batcher run``, and ``batcher dashboard`` over their
store; Debian's Chromium (``/usr/bin/chromium``) takes each page into ``docs/``. Every process it
starts is stopped at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from batcher.devrelay import RelayConfig, RelayServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lines(n: int, model: str, bad_every: int) -> str:
    rows = []
    for i in range(n):
        marker = " [[fault:400]]" if bad_every and i % bad_every == 7 else ""
        text = f"Summarise item {i} in one line.{marker}"
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 64}
        rows.append({"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return "".join(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="batcher-shots-"))
    (folder / "small.jsonl").write_text(lines(200, "gpt-4o", 60))
    (folder / "big.jsonl").write_text(lines(3000, "gpt-4o-mini", 150))
    config = RelayConfig(latency=0.08, rps_limit=30, fault_rate=0.03, faults=("500", "503"))
    with RelayServer(config) as relay:
        env = os.environ | {
            "BATCHER_HOME": str(folder / "home"),
            "OPENAI_BASE_URL": relay.url,
            "OPENAI_API_KEY": "sk-dev",
            "BATCHER_BROKER_URL": "redis://127.0.0.1:1/0",
        }
        batcher = [sys.executable, "-m", "batcher"]
        small = [*batcher, "run", str(folder / "small.jsonl"), "--tag", "nightly", "-o", str(folder / "s")]
        subprocess.run(small, env=env, check=False, capture_output=True)
        big = [*batcher, "run", str(folder / "big.jsonl"), "--tag", "eval", "--max-in-flight", "8"]
        run = subprocess.Popen(big, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        dashboard = subprocess.Popen([*batcher, "dashboard", "--port", str(port)], env=env)
        try:
            time.sleep(25)  # the running job gets a chart worth showing
            shoot(f"http://127.0.0.1:{port}", folder / "small.jsonl")
        finally:
            for proc in (run, dashboard):
                proc.terminate()
                proc.wait(timeout=30)


def shoot(base: str, upload: Path) -> None:
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 420})
        page.goto(base + "/")
        time.sleep(3)  # two polls: rates and ETA appear
        page.screenshot(path=DOCS / "dashboard-jobs.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(base + "/jobs/2")
        time.sleep(3)
        page.screenshot(path=DOCS / "dashboard-job.png", full_page=True)
        page.goto(base + "/usage")
        page.set_input_files("#estimate-file", upload)
        page.wait_for_selector("#estimate-table")
        page.screenshot(path=DOCS / "dashboard-usage.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
