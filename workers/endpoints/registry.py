"""The endpoint families batcher knows, found by their ``Endpoint`` (or the path a line names).

``override`` puts another family in place for the length of a ``with`` block: how a test adds a
family of its own without touching the reader, the estimator or the exporters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jobs.endpoints import Endpoint
from workers.endpoints.base import Family
from workers.endpoints.chat import Chat
from workers.endpoints.completions import Completions
from workers.endpoints.embeddings import Embeddings
from workers.endpoints.speech import Speech

_FAMILIES: dict[Endpoint, Family] = {f.endpoint: f for f in (Chat(), Completions(), Embeddings(), Speech())}


def family_of(endpoint: Endpoint) -> Family:
    """The family of an endpoint."""
    return _FAMILIES[endpoint]


def by_path(path: str) -> Family | None:
    """The family whose path is exactly ``path``, or None."""
    try:
        return _FAMILIES.get(Endpoint(path))
    except ValueError:
        return None


def families() -> list[Family]:
    """Every known family, in ``Endpoint`` order."""
    return [_FAMILIES[e] for e in Endpoint if e in _FAMILIES]


@contextlib.contextmanager
def override(family: Family) -> Iterator[Family]:
    """Use ``family`` for its endpoint inside the block (tests), then the one before it again."""
    before = _FAMILIES[family.endpoint]
    _FAMILIES[family.endpoint] = family
    try:
        yield family
    finally:
        _FAMILIES[family.endpoint] = before
