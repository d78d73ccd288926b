"""The estimate before any call: output limits, speech characters, pricing per model, assumptions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from batcher.estimate import estimate_file, estimate_lines, output_tokens
from jobs.endpoints import Endpoint
from jobs.errors import Problem
from workers.endpoints.chat import CHAT
from workers.endpoints.completions import COMPLETIONS
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.speech import SPEECH
from workers.prices import default_book
from workers.tokens import estimate_prompt_tokens


@dataclass(frozen=True)
class Line:
    """A parsed line as the reader yields it (endpoint, model, body)."""

    endpoint: Endpoint
    model: str
    body: Mapping[str, Any]


def ten_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """A prompt counter that says 10 for any line, so the arithmetic is easy to check."""
    return 10


@pytest.mark.parametrize(
    ("endpoint", "body", "typical", "expected"),
    [
        (CHAT, {"max_tokens": 100}, None, 100),
        (CHAT, {"max_completion_tokens": 50, "max_tokens": 100}, None, 50),
        (CHAT, {"max_tokens": 100, "n": 3}, None, 300),
        (CHAT, {}, 200, 200),
        (CHAT, {"n": 2}, 200, 400),
        (CHAT, {}, None, None),  # unknown: the caller must say so
        (COMPLETIONS, {"max_tokens": 16}, None, 16),
        (EMBEDDINGS, {"input": "x"}, 200, 0),
    ],
)
def test_output_tokens(
    endpoint: Endpoint, body: dict[str, Any], typical: int | None, expected: int | None
) -> None:
    assert output_tokens(endpoint, body, typical) == expected


def test_estimate_per_model() -> None:
    lines = [
        Line(CHAT, "gpt-4o-mini", {"max_tokens": 100}),
        Line(CHAT, "gpt-4o-mini", {"max_tokens": 100}),
        Line(SPEECH, "tts-1", {"input": "x" * 1000}),
        Line(CHAT, "mystery-model", {"max_tokens": 5}),
        Problem("in.jsonl", 5, "bad"),
    ]
    est = estimate_lines(lines, default_book(), count_prompt=ten_tokens)
    rows = {m.model: m for m in est.models}
    mini = rows["gpt-4o-mini"]
    assert (mini.lines, mini.prompt_tokens, mini.output_tokens) == (2, 20, 200)
    # 2 × (10 × 0.15/1M + 100 × 0.60/1M) = 2 × 0.0000615
    assert mini.cost == D("0.000123")
    assert rows["tts-1"].characters == 1000 and rows["tts-1"].cost == D("0.015")  # 1000 × 15/1M
    assert not rows["mystery-model"].priced
    assert est.cost == D("0.015123")
    assert est.invalid_lines == 1
    assert any("no price for mystery-model" in a for a in est.assumptions)


@pytest.mark.parametrize(
    ("typical", "note"),
    [(None, "counted as 0, so the cost is too low; pass --typical-output N"), (300, "--typical-output 300")],
)
def test_lines_without_max_tokens_are_stated(typical: int | None, note: str) -> None:
    lines = [Line(CHAT, "gpt-4o-mini", {})]
    est = estimate_lines(lines, default_book(), typical_output=typical, count_prompt=ten_tokens)
    assert any(note in a for a in est.assumptions)
    assert est.models[0].output_tokens == (typical or 0)


def test_estimate_file_streams_the_reader(tmp_path: Path) -> None:
    reader = pytest.importorskip("batcher.reader")
    path = tmp_path / "in.jsonl"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    path.write_text(json.dumps(line) + "\n" + "{not json\n")
    est = estimate_file(path, reader.ReadOptions(), default_book())
    assert est.models[0].lines == 1 and est.models[0].output_tokens == 100
    assert est.invalid_lines == 1


def test_estimate_per_family_in_its_billing_unit() -> None:
    gemini = Endpoint("/v1beta/models/text-embedding-004:embedContent")
    lines = [
        Line(CHAT, "m", {"max_tokens": 5}),
        Line(CHAT, "m", {"max_tokens": 5}),
        Line(SPEECH, "tts-1", {"input": "abc", "voice": "alloy"}),
        Line(gemini, "text-embedding-004", {"content": {"parts": [{"text": "x"}]}}),
    ]
    result = estimate_lines(lines, default_book(), count_prompt=ten_tokens)
    assert [(f.family, f.lines, f.quantity, f.billed_in) for f in result.families] == [
        ("chat", 2, 30, "tokens"),
        ("gemini_embed", 1, 10, "tokens, estimated"),
        ("speech", 1, 3, "characters"),
    ]


@pytest.mark.parametrize(
    ("endpoint", "model", "body", "cost"),
    [
        # 10 prompt × $3/1M + 64 output × $15/1M
        (Endpoint("/v1/messages"), "claude-sonnet-4-5-20250929", {"max_tokens": 64}, D("0.00099")),
        # 10 × $0.30/1M + 32 × $2.50/1M
        (
            Endpoint("/v1beta/models/gemini-2.5-flash:generateContent"),
            "gemini-2.5-flash",
            {"generationConfig": {"maxOutputTokens": 32}},
            D("0.000083"),
        ),
        (Endpoint("/v1/moderations"), "omni-moderation-latest", {"input": "x"}, D(0)),
    ],
)
def test_claude_gemini_and_moderation_lines_are_priced_by_the_default_table(
    endpoint: Endpoint, model: str, body: dict[str, Any], cost: D
) -> None:
    result = estimate_lines([Line(endpoint, model, body)], default_book(), count_prompt=ten_tokens)
    assert not result.unpriced_models
    assert result.cost == cost


def test_an_estimate_with_remembered_costs_is_the_sum_of_each_lines_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines that cost alike are priced once (``_COSTS_KEPT`` of them kept): the total is still each
    line's own ``cost_of_attempt``, added up, and the memo never grows past its bound."""
    import batcher.estimate as estimate
    from jobs.records import Usage
    from workers.cost import cost_of_attempt

    monkeypatch.setattr(estimate, "_COSTS_KEPT", 3)
    inputs = ["x" * (4 * (i % 7 + 1)) for i in range(50)]  # seven distinct token counts, over and over
    lines = [Line(EMBEDDINGS, "text-embedding-3-small", {"input": text}) for text in inputs]
    builder = estimate.EstimateBuilder(default_book())
    for line in lines:
        builder.add(line)
        assert len(builder._costs) <= 3
    price = default_book().lookup("text-embedding-3-small")
    expected = sum(
        (
            cost_of_attempt(Usage(prompt_tokens=estimate_prompt_tokens(EMBEDDINGS, line.body)), price) or D(0)
            for line in lines
        ),
        D(0),
    )
    (row,) = builder.result().models
    assert row.cost == expected > 0
    assert row.prompt_tokens == sum(estimate_prompt_tokens(EMBEDDINGS, line.body) for line in lines)


def test_a_prompt_counter_of_its_own_is_used() -> None:
    """Only the default counter is skipped (its count is the family's, already in the usage)."""
    lines = [Line(EMBEDDINGS, "text-embedding-3-small", {"input": "x" * 400})]
    assert estimate_lines(lines, default_book(), count_prompt=ten_tokens).models[0].prompt_tokens == 10
    default = estimate_lines(lines, default_book(), count_prompt=estimate_prompt_tokens)
    assert default.models[0].prompt_tokens == estimate_prompt_tokens(EMBEDDINGS, lines[0].body) == 100
