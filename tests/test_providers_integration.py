"""Several providers and keys from batcher.toml, end to end: `batcher run` over loopback HTTP
against two stand-in relays. Lines are routed by model (globs), spread across keys by their
limits, moved to the next provider when one is down, out of quota or missing the model, with one
result per line; each attempt names its provider and key; a canary key from the config's
environment variable appears nowhere."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from jobs.db import Store
from tests.helpers import all_attempts, all_lines, batch_line, invoke, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow
CANARY = "canary-provider-a-9f8e7d6c5b4a"  # the key of relay A, from PROV_A_KEY
KEY_B = "sk-provider-b-0123456789"
LABEL_A = "a/PROV_A_KEY …5b4a"
LABEL_B = "b/PROV_B_KEY …6789"


@pytest.fixture
def relays() -> Iterator[tuple[RelayServer, RelayServer]]:
    with RelayServer(RelayConfig(api_key=CANARY)) as a, RelayServer(RelayConfig(api_key=KEY_B)) as b:
        yield a, b


def provider(name: str, url: str, keys: list[str], models: list[str], extra: str = "") -> str:
    return (
        f'[[providers]]\nname = "{name}"\nbase_url = "{url}"\nkeys = {json.dumps(keys)}\n'
        f"models = {json.dumps(models)}\n{extra}\n"
    )


@pytest.fixture
def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Iterator[Any]:
    monkeypatch.setenv("PROV_A_KEY", CANARY)
    monkeypatch.setenv("PROV_B_KEY", KEY_B)
    monkeypatch.setenv("BATCHER_DATABASE_URL", store_url)

    def write(*tables: str) -> Path:
        path = tmp_path / "batcher.toml"
        path.write_text("".join(tables), encoding="utf-8")
        monkeypatch.setenv("BATCHER_CONFIG", str(path))
        return path

    yield write


def chat(i: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return batch_line(
        f"c{i}", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": f"q{i}"}]}
    )


def emb(i: int) -> dict[str, Any]:
    return batch_line(f"e{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": f"t{i}"})


def run(tmp_path: Path, rows: list[dict[str, Any]], *args: str) -> list[dict[str, Any]]:
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(source), "-o", str(out), "--no-pack", "--no-cache", *args)
    assert result.exit_code == 0, result.stderr
    exported = read_jsonl(out)
    assert Counter(r["custom_id"] for r in exported) == Counter(r["custom_id"] for r in rows)
    assert all(r["error"] is None for r in exported)
    return exported


def providers_of(db: Store) -> Counter[str | None]:
    return Counter(a.provider for a in all_attempts(db))


def test_lines_are_routed_by_model_globs_and_attempts_name_provider_and_key(
    configure: Any, relays: tuple[RelayServer, RelayServer], tmp_path: Path, store_url: str
) -> None:
    a, b = relays
    configure(
        provider("a", a.url, ["PROV_A_KEY"], ["gpt-4o*"]),
        provider("b", b.url, ["PROV_B_KEY"], ["text-embedding-*"]),
    )
    run(tmp_path, [chat(i) for i in range(6)] + [emb(i) for i in range(4)])
    assert (a.stats()["calls"], b.stats()["calls"]) == (6, 4)
    with Store(store_url) as db:
        assert providers_of(db) == {LABEL_A: 6, LABEL_B: 4}
    report = json.loads(invoke("usage", "--by", "provider", "--format", "json").stdout)
    assert {r["provider"]: r["calls"] for r in report["rows"]} == {"a": 6, "b": 4}
    by_key = json.loads(invoke("usage", "--by", "key", "--format", "json").stdout)
    assert {r["key"] for r in by_key["rows"]} == {LABEL_A, LABEL_B}
    out = tmp_path / "out.csv"
    assert invoke("export", "1", "-o", str(out), "--format", "csv").exit_code == 0
    with out.open() as f:
        rows = {r["custom_id"]: r["provider"] for r in csv.DictReader(f)}
    assert rows["c0"] == LABEL_A and rows["e3"] == LABEL_B


def test_two_keys_share_the_calls_in_proportion_to_their_limits(
    configure: Any, relays: tuple[RelayServer, RelayServer], tmp_path: Path, store_url: str
) -> None:
    _, b = relays
    b.set_config(RelayConfig())  # any key
    configure(
        provider(
            "b",
            b.url,
            ["PROV_A_KEY", "PROV_B_KEY"],
            [],
            "rpm = 30000\n[providers.key_limits.PROV_B_KEY]\nrpm = 10000\n",
        )
    )
    run(tmp_path, [chat(i) for i in range(200)], "--max-in-flight", "8")
    with Store(store_url) as db:
        shares = providers_of(db)
    assert shares == {"b/PROV_A_KEY …5b4a": 150, "b/PROV_B_KEY …6789": 50}


@pytest.mark.parametrize("trouble", ["model_not_found", "quota", "down"])
def test_failover_to_the_next_provider_loses_nothing_and_calls_no_line_twice_on_one(
    configure: Any, relays: tuple[RelayServer, RelayServer], tmp_path: Path, store_url: str, trouble: str
) -> None:
    a, b = relays
    url = a.url
    if trouble == "model_not_found":
        a.set_config(RelayConfig(api_key=CANARY, models=("gpt-4o",)))  # its channel for gpt-4o-mini is gone
    elif trouble == "quota":
        a.set_config(RelayConfig(api_key=CANARY, quota_after=5))
    else:
        url = "http://127.0.0.1:9/v1"  # nothing listens
    configure(
        provider("a", url, ["PROV_A_KEY"], ["gpt-4o*"], "rpm = 60000"),
        provider("b", b.url, ["PROV_B_KEY"], ["gpt-*"], "rpm = 20000"),
    )
    rows = [chat(i) for i in range(40)]
    run(tmp_path, rows, "--max-in-flight", "4")
    with Store(store_url) as db:
        lines = all_lines(db)
        attempts = all_attempts(db)
    assert all(ln.state == "succeeded" for ln in lines) and len(lines) == 40
    ok = [x for x in attempts if x.outcome == "ok"]
    assert len(ok) == 40  # one answer per line
    served_by_a = a.stats()["served"]
    assert b.stats()["served"] + served_by_a == 40
    assert b.stats()["served"] >= 30  # moved to b once a could not serve
    assert sum(b.stats()["per_key"].values()) == b.stats()["calls"] == b.stats()["served"]  # none twice on b
    if trouble == "quota":
        assert served_by_a == 5
    else:
        assert served_by_a == 0


def test_canary_key_from_the_config_never_in_store_logs_exports_or_providers(
    configure: Any, relays: tuple[RelayServer, RelayServer], tmp_path: Path, store_url: str
) -> None:
    a, b = relays
    config = configure(
        provider("a", a.url, ["PROV_A_KEY", "PROV_MISSING"], ["gpt-4o*"], 'headers = { "X-Team" = "evals" }'),
        provider("b", b.url, ["PROV_B_KEY"], ["text-embedding-*"]),
    )
    assert CANARY not in config.read_text()
    rows = [chat(i) for i in range(5)] + [chat(99, "gpt-4o-bad")]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = [
        invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--errors", str(tmp_path / "err.jsonl"))
    ]
    for fmt in ("jsonl", "csv", "parquet"):
        outputs.append(invoke("export", "1", "-o", str(tmp_path / f"all.{fmt}"), "--format", fmt))
    outputs += [
        invoke("providers"),
        invoke("providers", "--check"),
        invoke("providers", "--json"),
        invoke("usage", "--by", "key"),
    ]
    listed = outputs[-4].stdout
    assert "PROV_A_KEY …5b4a" in listed and "PROV_MISSING (not set)" in listed
    for result in outputs:
        assert CANARY not in result.stdout + result.stderr
    with Store(store_url) as db:
        dumped = [ln.model_dump_json() for ln in all_lines(db)] + [
            x.model_dump_json() for x in all_attempts(db)
        ]
    assert any(LABEL_A in d for d in dumped)  # the rows are there to check
    assert not [d for d in dumped if CANARY in d]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".csv", ".parquet", ".db", ".log"):
            assert CANARY.encode() not in path.read_bytes(), path


def test_config_option_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROV_B_KEY", KEY_B)
    path = tmp_path / "elsewhere.toml"
    path.write_text(provider("b", "https://b.test/v1", ["PROV_B_KEY", "PROV_C_KEY"], ["claude-*"]))
    result = invoke("--config", str(path), "providers", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["name"] == "b" and row["source"] == str(path)
    assert [k["label"] for k in row["keys"]] == ["PROV_B_KEY …6789", "PROV_C_KEY (not set)"]
    assert KEY_B not in result.stdout


@pytest.mark.redis
@pytest.mark.postgres
def test_workers_route_and_fail_over_with_the_config_file(
    relays: tuple[RelayServer, RelayServer], tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    from tests.cluster import Cluster, cluster_env

    _, b = relays
    config = tmp_path / "batcher.toml"
    config.write_text(
        provider("a", "http://127.0.0.1:9/v1", ["PROV_A_KEY"], ["text-embedding-*"])  # down
        + provider("b", b.url, ["PROV_B_KEY"], ["text-embedding-*"]),
        encoding="utf-8",
    )
    env = cluster_env(tmp_path, relay_url=b.url, key="unused", db_url=pg_url, broker_url=redis_url)
    env |= {"BATCHER_CONFIG": str(config), "PROV_A_KEY": CANARY, "PROV_B_KEY": KEY_B}
    cluster = Cluster(tmp_path, env, Store(pg_url))
    try:
        cluster.start_worker("a")
        rows = [emb(i) for i in range(60)]
        job_id = cluster.submit(write_jsonl(tmp_path / "in.jsonl", rows), options={"pack": False})
        cluster.wait_done(job_id)
        assert cluster.counts(job_id)["succeeded"] == 60
        ok = [x for x in all_attempts(cluster.store) if x.outcome == "ok"]
        assert len(ok) == 60 and {x.provider for x in ok} == {LABEL_B}
        assert b.stats()["served"] == 60
        for log in cluster.logs.values():
            assert CANARY not in log.read_text(errors="replace")
    finally:
        cluster.stop()
        cluster.store.close()
