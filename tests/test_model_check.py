"""`submit` and `run` refuse a file naming a model the relay does not list, before any call and with
nothing stored, naming the lines and the closest served names; `batcher models` lists them."""

from __future__ import annotations

import json
from pathlib import Path

from batcher.devrelay import RelayConfig, RelayServer
from jobs import store as q
from jobs.db import Store
from tests.helpers import RELAY_KEY, batch_line, invoke, write_jsonl

SERVED = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def typo_file(tmp_path: Path) -> Path:
    rows = [batch_line(f"c{i}", "/v1/chat/completions", chat("gpt-4o-mini")) for i in range(3)]
    rows.insert(1, batch_line("bad", "/v1/chat/completions", chat("gpt-4o-mni")))
    rows.append(batch_line("worse", "/v1/chat/completions", chat("llama-9")))
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_submit_refuses_unserved_models_naming_lines_and_closest_names(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, models=SERVED))
    path = typo_file(tmp_path)
    result = invoke("submit", str(path), "--no-queue")
    assert result.exit_code == 1
    assert (
        f'{path}:2: model "gpt-4o-mni" is not served by any configured provider; closest served: gpt-4o-mini'
        in result.stderr
    )
    assert f'{path}:5: model "llama-9" is not served by any configured provider\n' in result.stderr
    assert "2 invalid lines; nothing was stored" in result.stderr
    with db.session() as s:
        assert q.list_jobs(s) == []
    assert relay.stats()["calls"] == 0


def test_run_refuses_before_any_call_and_runs_once_fixed(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, models=SERVED))
    assert invoke("run", str(typo_file(tmp_path))).exit_code == 1
    assert relay.stats()["calls"] == 0
    good = write_jsonl(tmp_path / "good.jsonl", [batch_line("a", "/v1/chat/completions", chat("gpt-4o"))])
    assert invoke("run", str(good)).exit_code == 0


def test_a_relay_without_a_list_checks_nothing(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    assert invoke("submit", str(typo_file(tmp_path)), "--no-queue").exit_code == 0


def test_models_lists_what_the_relay_serves(env: str, relay: RelayServer) -> None:
    relay.set_config(RelayConfig(api_key=RELAY_KEY, models=SERVED))
    result = invoke("models")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == sorted(SERVED)
    assert json.loads(invoke("models", "--json").stdout) == {"default": sorted(SERVED)}
    assert invoke("models", "--provider", "nope").exit_code == 1


def test_models_says_when_the_relay_lists_none(env: str, relay: RelayServer) -> None:
    result = invoke("models")
    assert result.exit_code == 1
    assert "does not list its models" in result.stderr
