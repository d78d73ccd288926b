"""Embedding packing: keys, merging, splitting, and usage that adds up exactly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobs.records import Usage
from workers.packing import (
    attribute_usage,
    inputs_of,
    largest_remainder,
    line_bodies,
    merge_bodies,
    pack_key,
    split_answer,
    with_usage,
)


def test_pack_key_ignores_input_only() -> None:
    a = {"model": "e", "input": "x", "dimensions": 4}
    assert pack_key(a) == pack_key({"dimensions": 4, "input": ["y", "z"], "model": "e"})
    assert pack_key(a) != pack_key({"model": "e", "input": "x", "dimensions": 8})
    assert pack_key(a) != pack_key({"model": "e", "input": "x", "dimensions": 4, "encoding_format": "base64"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", ["a"]), (["a", "b"], ["a", "b"]), ([1, 2, 3], [[1, 2, 3]]), ([[1, 2], [3]], [[1, 2], [3]])],
)
def test_inputs_of_table(value: Any, expected: list[Any]) -> None:
    assert inputs_of({"input": value}) == expected


def test_merge_then_split_gives_each_line_its_own_vectors() -> None:
    bodies = [
        {"model": "e", "input": "a"},
        {"model": "e", "input": ["b", "c"]},
        {"model": "e", "input": [5, 6]},
    ]
    merged, spans = merge_bodies(bodies)
    assert merged == {"model": "e", "input": ["a", "b", "c", [5, 6]]}
    assert spans == [(0, 1), (1, 3), (3, 4)]
    answer = {
        "object": "list",
        "model": "e",
        "data": [{"object": "embedding", "index": i, "embedding": [float(i)]} for i in (3, 1, 0, 2)],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    parts = split_answer(answer, spans)
    assert [[d["embedding"] for d in p["data"]] for p in parts] == [[[0.0]], [[1.0], [2.0]], [[3.0]]]
    assert [[d["index"] for d in p["data"]] for p in parts] == [[0], [0, 1], [0]]
    assert all(p["object"] == "list" and p["model"] == "e" and "usage" not in p for p in parts)


def test_split_answer_refuses_a_count_mismatch() -> None:
    with pytest.raises(ValueError, match="2 embeddings for 3 inputs"):
        split_answer({"data": [{"index": 0}, {"index": 1}]}, [(0, 1), (1, 3)])


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (10, [1, 1], [5, 5]),
        (10, [1, 1, 1], [4, 3, 3]),  # 3.33 each: the one left over goes to the first
        (7, [1, 2, 4], [1, 2, 4]),
        (100, [3, 3, 4], [30, 30, 40]),
        (5, [10, 1, 1], [4, 1, 0]),  # 4.17, 0.42, 0.42: floors 4,0,0; the one left goes to the first 0.42
        (3, [0, 0, 0], [1, 1, 1]),  # no estimates: equal shares
        (0, [5, 5], [0, 0]),
    ],
)
def test_largest_remainder_table(total: int, weights: list[int], expected: list[int]) -> None:
    parts = largest_remainder(total, weights)
    assert parts == expected
    assert sum(parts) == total


def test_attribute_usage_adds_up_exactly_and_flags_missing_usage() -> None:
    answer = {"usage": {"prompt_tokens": 101, "total_tokens": 101}}
    usages = attribute_usage(answer, [10, 20, 33])
    assert sum(u.prompt_tokens for u in usages) == 101
    assert sum(u.total_tokens for u in usages) == 101
    assert attribute_usage({}, [3, 4]) == [Usage(3, 0, 3, estimated=True), Usage(4, 0, 4, estimated=True)]
    assert [u.prompt_tokens for u in attribute_usage({"usage": {"prompt_tokens": 11}}, [4, 4, 4])] == [
        4,
        4,
        3,
    ]
    assert with_usage({"data": []}, Usage(3, 0, 3))["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


_ITEMS = {
    "alike": [{"object": "embedding", "index": i} for i in (3, 1, 0, 2)],
    "differing": [{"object": "embedding", "index": 1, "x": "é"}, {"index": 0}, {"object": "e", "index": 2},
                  {"index": 3, "object": "embedding"}],
    "no index": [{"object": "embedding"}, {"object": "embedding"}, {"object": "embedding"}, {"object": "embedding"}],
}  # fmt: skip


@pytest.mark.parametrize("items", list(_ITEMS))
@pytest.mark.parametrize("rest", [{"object": "list", "model": "é-3", "extra": [1.5, None]}, {}])
def test_line_bodies_are_what_splitting_and_dumping_each_line_writes(
    items: str, rest: dict[str, Any]
) -> None:
    answer = {**rest, "data": _ITEMS[items], "usage": {"prompt_tokens": 9, "total_tokens": 10}}
    spans = [(0, 1), (1, 3), (3, 4)]
    usages = attribute_usage(answer, [1, 5, 3])
    expected = [
        orjson.dumps(with_usage(p, u)).decode()
        for p, u in zip(split_answer(answer, spans), usages, strict=True)
    ]
    assert line_bodies(answer, spans, usages) == expected
    with pytest.raises(ValueError, match="4 embeddings for 5 inputs"):
        line_bodies(answer, [(0, 5)], usages[:1])
