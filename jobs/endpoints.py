"""The four API endpoints batcher calls, as the paths an OpenAI Batch input line names them.

A line may only choose one of these paths, never a host: the base URL comes from settings.
"""

from __future__ import annotations

from enum import StrEnum


class Endpoint(StrEnum):
    """An endpoint path as written in the ``url`` field of an OpenAI Batch input line."""

    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"
    EMBEDDINGS = "/v1/embeddings"
    SPEECH = "/v1/audio/speech"

    @property
    def kind(self) -> str:
        """A short name: chat, completions, embeddings or speech (queue names, tables)."""
        return _KINDS[self]

    @property
    def relative_path(self) -> str:
        """The path below the base URL, which already ends in the API version (``.../v1``)."""
        return self.value.removeprefix("/v1/")


_KINDS = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "completions",
    Endpoint.EMBEDDINGS: "embeddings",
    Endpoint.SPEECH: "speech",
}

ENDPOINT_LIST = ", ".join(e.value for e in Endpoint)
