"""The endpoint families batcher knows, found by the route a line names.

Every ``Family`` subclass defined in a module of ``workers.endpoints`` is a family: the registry
imports the package's modules once, on first use, and keeps one instance of each. A route is
matched by the family's ``accepts`` (exact paths, or a pattern for routes that carry a model
name), and the match is remembered per path.

``override`` puts another family in place for the length of a ``with`` block: how a test adds a
family of its own without touching the reader, the estimator or the exporters.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
from collections.abc import Iterator

from jobs.endpoints import Endpoint
from jobs.errors import UnknownEndpoint
from workers.endpoints.base import Family

_NOT_FAMILIES = {"base", "registry"}
_families: list[Family] = []
_by_path: dict[str, Family | None] = {}


def families() -> list[Family]:
    """Every known family, ordered by name."""
    if not _families:
        _families.extend(_discover())
    return list(_families)


def by_path(path: str) -> Family | None:
    """The family serving the route ``path``, or None."""
    if path not in _by_path:
        _by_path[path] = next((f for f in families() if f.accepts(path)), None)
    return _by_path[path]


def family_of(endpoint: Endpoint) -> Family:
    """The family of a stored or validated endpoint."""
    family = by_path(endpoint.path)
    if family is None:
        raise UnknownEndpoint(
            f"no endpoint family serves {endpoint.path}; routes served: {route_list()} "
            "(was the job stored by a newer batcher? run it with that version)"
        )
    return family


def route_list() -> str:
    """The routes every family serves, as messages list them."""
    return ", ".join(r for f in families() for r in f.route_names())


@contextlib.contextmanager
def override(family: Family) -> Iterator[Family]:
    """Use ``family`` first, for every route it accepts, inside the block (tests)."""
    before = families()
    _families[:] = [family] + [f for f in before if f.name != family.name]
    _by_path.clear()
    try:
        yield family
    finally:
        _families[:] = before
        _by_path.clear()


def _discover(package_name: str = "workers.endpoints") -> list[Family]:
    """One instance of every family defined in the modules of a package, ordered by name."""
    package = importlib.import_module(package_name)
    found: dict[str, Family] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_FAMILIES:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for cls in vars(module).values():
            if _is_family(cls, module.__name__):
                found[cls.name] = cls()
    return [found[name] for name in sorted(found)]


def _is_family(obj: object, module: str) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, Family)
        and obj.__module__ == module
        and not inspect.isabstract(obj)
        and "name" in vars(obj)
    )
