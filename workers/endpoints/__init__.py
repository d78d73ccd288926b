"""Endpoint families: one module per kind of API call (see ``workers.endpoints.base``).

``family_of(endpoint)`` is how the rest of batcher asks what an endpoint means; adding a family
is one module here (the registry finds it) and its test file (README, "Adding an endpoint
family").
"""

from __future__ import annotations

from workers.endpoints.base import (
    BodyError,
    Family,
    ParsedAnswer,
    RequestContent,
    answered_usage,
)
from workers.endpoints.registry import by_path, families, family_of, override, route_list
from workers.tokens import DEFAULT_COMPLETION

__all__ = [
    "DEFAULT_COMPLETION",
    "BodyError",
    "Family",
    "ParsedAnswer",
    "RequestContent",
    "answered_usage",
    "by_path",
    "families",
    "family_of",
    "override",
    "route_list",
]
