"""Endpoint: the route an input line names in its ``url``, as a typed value the store keeps.

A line may only choose a path, never a host: the base URL comes from settings. Which paths are
valid, and what each means, is the business of the endpoint families (``workers.endpoints``):
this layer only carries the path and knows where a path goes below a base URL, so a new family is
one module there and nothing here.

Most routes hang off the API version the base URL ends in (``/v1/chat/completions`` goes to
``{base}/chat/completions``); native and task routes hang off the relay's root instead
(``/v1beta/models/...``, ``/mj/submit/imagine``): with ``OPENAI_BASE_URL=https://relay/v1`` they
go to ``https://relay/v1beta/...`` and ``https://relay/mj/...``.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION_PREFIX = "/v1/"


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A route path as written in the ``url`` field of an input line (``/v1/embeddings``)."""

    path: str

    def __str__(self) -> str:
        return self.path

    @property
    def relative_path(self) -> str:
        """The path below a base URL that ends in ``/v1``; a root route keeps its leading slash."""
        if self.path.startswith(VERSION_PREFIX):
            return self.path.removeprefix(VERSION_PREFIX)
        return self.path

    def url_under(self, base_url: str) -> str:
        """The full URL of this route for a relay whose API base URL is ``base_url``."""
        base = base_url.rstrip("/")
        if self.path.startswith(VERSION_PREFIX):
            return f"{base}/{self.relative_path}"
        return relay_root(base) + self.path


def relay_root(base_url: str) -> str:
    """The relay's root: the base URL without the API version it ends in (``/v1``)."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")
