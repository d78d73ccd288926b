"""What ``batcher providers`` shows: each configured provider, its keys (by name and last four
characters only), and with ``check`` its reachability, model list and balance.

Also the per-provider client configurations that ``batcher models`` and the check at submit use:
one provider is asked through its first key that is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from batcher.balance import fetch_balance
from batcher.model_list import Unreachable, fetch_models
from jobs.errors import ApiError
from jobs.providers import Provider
from workers.catalog import ModelCatalog
from workers.client import ClientConfig
from workers.redact import redact
from workers.routing import route_configs


@dataclass(frozen=True)
class Check:
    """One provider's answers to ``--check``."""

    reachable: bool
    models: list[str] | None  # None: it lists none
    balance_usd: str | None
    problems: list[str]


def provider_config(provider: Provider, base: ClientConfig) -> ClientConfig | None:
    """How to ask the provider (its first key that is set); None when none is set."""
    configs = route_configs(provider, base)
    return configs[0][1] if configs else None


def describe(provider: Provider, check: Check | None = None) -> dict[str, object]:
    """The provider as configured (keys as labels only) and what the check found, as JSON data."""
    c = provider.config
    data: dict[str, object] = {
        "name": c.name,
        "base_url": c.base_url,
        "source": provider.source,
        "models": list(c.models) or ["(any: as listed by the relay)"],
        "keys": [{"label": k.label, "present": k.present} for k in provider.keys],
        "limits": {"rpm": c.rpm, "tpm": c.tpm, "concurrency": c.concurrency},
        "headers": sorted(c.headers),
        "pricing_group": c.pricing_group,
    }
    if check is not None:
        data["check"] = {"reachable": check.reachable, "models": check.models,
                         "balance_usd": check.balance_usd, "problems": check.problems}  # fmt: skip
    return data


def table_row(provider: Provider, check: Check | None = None) -> list[object]:
    """The provider as a row of ``batcher providers``' table."""
    c = provider.config
    row: list[object] = [
        c.name,
        c.base_url,
        ", ".join(c.models) or "any",
        ", ".join(k.label for k in provider.keys),
    ]
    row.append(c.rpm or "")
    if check is not None:
        listed = len(check.models) if check.models is not None else "none"
        row += [
            "yes" if check.reachable else "no",
            listed,
            check.balance_usd or "",
            "; ".join(check.problems),
        ]
    return row


def check(provider: Provider, base: ClientConfig, secrets: list[str]) -> Check:
    """Ask the provider for its models and its balance."""
    config = provider_config(provider, base)
    if config is None:
        return Check(False, None, None, ["no key is set: set " + ", ".join(k.env for k in provider.keys)])
    problems: list[str] = []
    try:
        models = fetch_models(config)
    except Unreachable as exc:
        return Check(False, None, None, [redact(str(exc), secrets)])
    except ApiError as exc:
        models, problems = None, [redact(str(exc), secrets)]
    try:
        balance: str | None = f"{fetch_balance(config).remaining_usd:.2f}"
    except ApiError as exc:
        balance = None
        problems.append(redact(str(exc), secrets))
    return Check(True, models, balance, problems)


def served_catalog(providers: list[Provider], base: ClientConfig) -> tuple[ModelCatalog | None, list[str]]:
    """What the providers serve, for the check at submit, and notes on what was not checked.

    A provider's configured names and globs, else the models it lists. None when one of them lists
    nothing or cannot be reached (it may serve anything): no line can be refused for its model.
    """
    served: list[str] = []
    for provider in providers:
        if provider.config.models:
            served += provider.config.models
            continue
        config = provider_config(provider, base)
        try:
            listed = fetch_models(config) if config is not None else None
        except Unreachable:
            return None, []  # the run will say so, with the breaker's message
        except ApiError as exc:
            return None, [f"note: models not checked: {exc}"]
        if listed is None:
            return None, []
        served += listed
    return ModelCatalog.of(served), []
