"""Cost accounting end to end: `batcher run` against the stand-in relay, then the usage report.

Prices are $1 per token for model "m", so dollars equal tokens and every sum is checkable by hand.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batcher.devrelay import RelayConfig, RelayServer
from batcher.usage import usage_report
from jobs.db import Store
from tests.helpers import RELAY_KEY, batch_line, invoke, write_jsonl
from workers.prices import load_prices

pytestmark = pytest.mark.slow
KEY = RELAY_KEY


def price_file(tmp: Path) -> Path:
    path = tmp / "prices.toml"
    path.write_text('[models."m"]\ninput = 1000000\noutput = 1000000\n')
    return path


def rows(n: int) -> list[dict[str, Any]]:
    body = {"model": "m", "max_tokens": 20}
    return [
        batch_line(
            f"c{i}",
            "/v1/chat/completions",
            body | {"messages": [{"role": "user", "content": f"say {i} now"}]},
        )
        for i in range(n)
    ]


def test_confirmed_usage_equals_what_the_relay_reported_and_cost_is_exact(
    db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    faults = ("500", "502", "503", "truncated", "error200", "missing_usage")
    relay.set_config(RelayConfig(api_key=KEY, fault_rate=0.3, faults=faults, seed=7))
    source = write_jsonl(tmp_path / "in.jsonl", rows(120))
    result = invoke(
        "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--no-pack", "--max-attempts", "10"
    )
    assert result.exit_code == 0, result.stderr
    prices = load_prices([price_file(tmp_path)])
    total = usage_report(db, [1], prices=prices).total
    stats = relay.stats()
    assert stats["by_fault"]["missing_usage"] > 0
    assert stats["by_fault"]["truncated"] > 0
    confirmed = total.billed.tokens - total.estimated.tokens
    assert confirmed == stats["reported_usage"]["total_tokens"]
    # $1 a token: the confirmed cost is the billed token count, estimates included, to the cent.
    assert total.cost == Decimal(total.billed.tokens)
    assert total.unknown_calls == stats["by_fault"]["truncated"]  # cut-off 2xx: billed, amount unknown
    assert total.cost + total.unknown_cost >= Decimal(stats["usage"]["total_tokens"])


def test_calls_slower_than_the_timeout_are_bounded_by_the_unknown_part(
    db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    relay.set_config(RelayConfig(api_key=KEY, fault_rate=0.5, faults=("hang",), hang_seconds=3.0, seed=3))
    source = write_jsonl(tmp_path / "in.jsonl", rows(30))
    result = invoke(
        "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--timeout", "0.5", "--max-attempts", "20"
    )
    assert result.exit_code == 0, result.stderr
    total = usage_report(db, [1], prices=load_prices([price_file(tmp_path)])).total
    billed_by_relay = Decimal(relay.stats()["usage"]["total_tokens"])  # every call whose work was done
    assert total.unknown_calls > 0
    assert total.cost <= billed_by_relay <= total.cost + total.unknown_cost


def test_images_cost_by_model_size_and_quality_in_estimate_and_usage(
    env: str, db: Store, relay: RelayServer, tmp_path: Path
) -> None:
    """dall-e-3 hd 1024x1792 ×2 ($0.12 each), dall-e-3 at its defaults ($0.04), dall-e-2 256² ($0.016)."""
    gen = "/v1/images/generations"
    lines = [
        batch_line("hd", gen, {"model": "dall-e-3", "prompt": "a", "size": "1024x1792", "quality": "hd", "n": 2}),
        batch_line("plain", gen, {"model": "dall-e-3", "prompt": "b"}),
        batch_line("small", gen, {"model": "dall-e-2", "prompt": "c", "size": "256x256"}),
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    estimate = invoke("estimate", str(source), "--json")
    assert estimate.exit_code == 0, estimate.stderr
    assert Decimal(str(json.loads(estimate.stdout)["cost"])) == Decimal("0.296")
    result = invoke("run", str(source), "-o", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 0, result.stderr
    report = usage_report(db, [1], by="model", prices=load_prices())
    costs = {row.key[0]: row.totals.cost for row in report.rows}
    assert costs == {"dall-e-3": Decimal("0.28"), "dall-e-2": Decimal("0.016")}
    assert report.total.billed.images == 4
