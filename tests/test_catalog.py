"""Which models a catalog serves: names, globs, and the closest names for a typo."""

from __future__ import annotations

import pytest

from workers.catalog import ModelCatalog, is_glob

CATALOG = ModelCatalog.of(["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-*", "qwen-?b"])


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ("gpt-4o-mini", True),
        ("gpt-4o", True),
        ("gpt-4o-mini-2024", False),  # a name is exact
        ("claude-3-5-sonnet", True),
        ("Claude-3", False),  # case-sensitive, as relays match names
        ("qwen-7b", True),
        ("qwen-72b", False),
        ("", False),
    ],
)
def test_serves_names_exactly_and_globs_by_pattern(model: str, served: bool) -> None:
    assert CATALOG.serves(model) is served


def test_globs_are_kept_apart_from_names() -> None:
    assert CATALOG.globs == ("claude-*", "qwen-?b")
    assert "claude-*" not in CATALOG.names
    assert [is_glob(m) for m in ("a*", "a?", "a[bc]", "abc")] == [True, True, True, False]


@pytest.mark.parametrize(
    ("model", "closest"),
    [
        ("gpt-4o-mni", ["gpt-4o-mini", "gpt-4o"]),
        ("text-embeding-3-small", ["text-embedding-3-small"]),
        ("llama", []),
    ],
)
def test_closest_names_for_a_typo(model: str, closest: list[str]) -> None:
    assert CATALOG.closest(model) == closest
