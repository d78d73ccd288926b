"""Which models the configured providers serve: names a relay listed, or names and globs configured.

A pure record, so the check at submit (``batcher.ingest``) and the routing of a line to a provider
agree on what "serves" means: an exact name, or a shell-style glob (``gpt-4o*``, ``claude-*``)
matched case-sensitively, as relays match model names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

CLOSEST = 3  # names offered for a model no provider serves
CUTOFF = 0.5  # difflib's similarity below which a name is not offered


def is_glob(pattern: str) -> bool:
    """Whether a configured model name is a pattern rather than a name."""
    return any(ch in pattern for ch in "*?[")


@dataclass(frozen=True)
class ModelCatalog:
    """Model names and globs served by some provider."""

    names: frozenset[str]
    globs: tuple[str, ...] = ()

    @classmethod
    def of(cls, models: Iterable[str]) -> ModelCatalog:
        """A catalog of names and globs as written (``gpt-4o``, ``gpt-4o*``)."""
        items = list(models)
        return cls(frozenset(m for m in items if not is_glob(m)), tuple(m for m in items if is_glob(m)))

    def serves(self, model: str) -> bool:
        """Whether the model is one of the names or matches one of the globs."""
        return model in self.names or any(fnmatchcase(model, g) for g in self.globs)

    def closest(self, model: str) -> list[str]:
        """The served names most like ``model`` (for a typo: ``gpt-4o-mni`` → ``gpt-4o-mini``)."""
        return difflib.get_close_matches(model, sorted(self.names), n=CLOSEST, cutoff=CUTOFF)
