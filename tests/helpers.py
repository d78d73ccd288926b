"""Helpers shared by integration tests: input files, the CLI in-process, store queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlmodel import select

from batcher.cli import cli
from jobs.db import Store
from jobs.models import Attempt, Request

RELAY_KEY = "sk-canary-integration-0123456789"  # the key the stand-in relay of the tests requires


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def invoke(*args: str) -> Result:
    """Run the CLI in this process (stdout and stderr apart)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def all_lines(store: Store) -> list[Request]:
    with store.session() as s:
        return list(s.exec(select(Request).order_by(Request.job_id, Request.line_no)))


def all_attempts(store: Store) -> list[Attempt]:
    with store.session() as s:
        return list(s.exec(select(Attempt).order_by(Attempt.id)))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
