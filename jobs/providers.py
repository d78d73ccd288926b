"""Providers and their keys: ``batcher.toml``, or the one provider of the environment.

A config file lists relays (``[[providers]]``): a name, a base URL, the *names* of the
environment variables that hold its keys (never a key itself: the file can be committed and the
store never sees a key), the models it serves (names and globs; none: any model), limits per key
(``rpm``, ``tpm``, ``concurrency``, overridden per key in ``[providers.key_limits.ENV_NAME]`` and
per model in ``[providers.model_limits."MODEL"]``), extra headers and the pricing group::

    [[providers]]
    name = "relay-a"
    base_url = "https://relay-a.example.com/v1"
    keys = ["RELAY_A_KEY", "RELAY_A_KEY_2"]
    models = ["gpt-4o-mini", "text-embedding-*"]
    rpm = 3000

The file is found where ``--config FILE`` (``BATCHER_CONFIG``) says, else ``./batcher.toml``,
else ``~/.config/batcher/batcher.toml`` (``$XDG_CONFIG_HOME``). Without one, the environment's
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (or ``BATCHER_*``) are one provider named ``default``:
today's setup unchanged.

A key is shown only by its variable's name and its last four characters (``KeyRef.label``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from jobs.errors import ConfigError

CONFIG_NAME = "batcher.toml"
DEFAULT_PROVIDER = "default"


class LimitConfig(BaseModel):
    """Limits of one key (or of one model on each key) when the relay's are known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)


class ProviderConfig(LimitConfig):
    """One ``[[providers]]`` table as written."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str
    keys: tuple[str, ...] = ()  # names of environment variables
    models: tuple[str, ...] = ()  # names and globs; empty: any model
    key_limits: dict[str, LimitConfig] = Field(default_factory=dict)
    model_limits: dict[str, LimitConfig] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    pricing_group: str | None = None

    @field_validator("keys")
    @classmethod
    def _env_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not name.replace("_", "").isalnum() or name.startswith("sk-"):
                raise ValueError(
                    f"{name!r} is not an environment variable name: write the variable's name "
                    "(RELAY_A_KEY), never the key itself"
                )
        return names


class ConfigFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(min_length=1)


@dataclass(frozen=True)
class KeyRef:
    """One key of a provider: the variable it is read from and, when set, its value."""

    env: str
    value: SecretStr | None = field(default=None, repr=False, compare=False)

    @property
    def present(self) -> bool:
        """Whether the variable is set (to something)."""
        return self.value is not None

    @property
    def label(self) -> str:
        """How the key is shown anywhere: its variable's name and last four characters."""
        if self.value is None:
            return f"{self.env} (not set)"
        return f"{self.env} …{self.value.get_secret_value()[-4:]}"


@dataclass(frozen=True)
class Provider:
    """A configured provider with its keys read from the environment."""

    config: ProviderConfig
    keys: tuple[KeyRef, ...]
    source: str  # the config file, or "environment"

    @property
    def name(self) -> str:
        """The provider's name (``default`` for the environment's)."""
        return self.config.name

    def present_keys(self) -> list[KeyRef]:
        """The keys whose variable is set."""
        return [k for k in self.keys if k.present]

    def limits_for(self, key: KeyRef, model: str | None = None) -> LimitConfig:
        """A key's limits: the model's, else the key's, else the provider's."""
        chosen = self.config.model_limits.get(model or "") or self.config.key_limits.get(key.env)
        base = self.config
        if chosen is None:
            return LimitConfig(rpm=base.rpm, tpm=base.tpm, concurrency=base.concurrency)
        return LimitConfig(
            rpm=chosen.rpm or base.rpm,
            tpm=chosen.tpm or base.tpm,
            concurrency=chosen.concurrency or base.concurrency,
        )


def find_config(explicit: Path | None, *, cwd: Path, config_home: Path) -> Path | None:
    """The config file to read: the one named, else the working folder's, else the user's
    (``config_home`` is ``$XDG_CONFIG_HOME``, by default ``~/.config``)."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist (from --config or BATCHER_CONFIG)")
        return explicit
    for candidate in (cwd / CONFIG_NAME, config_home / "batcher" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path) -> ConfigFile:
    """The file's providers, validated; a ``ConfigError`` names the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML ({exc})") from None
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'], data)}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    names = [p.name for p in parsed.providers]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"{path}: two providers share a name ({', '.join(sorted(names))}); names must differ"
        )
    return parsed


def _where(loc: tuple[int | str, ...], data: object) -> str:
    """``providers[1].rpm`` as ``provider "relay-b": rpm``."""
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int) and isinstance(data, dict):
        tables = data.get("providers") or []
        name = (
            tables[loc[1]].get("name") if loc[1] < len(tables) and isinstance(tables[loc[1]], dict) else None
        )
        field_path = ".".join(str(p) for p in loc[2:]) or "table"
        return f'provider "{name or loc[1] + 1}": {field_path}'
    return ".".join(str(p) for p in loc) or "file"


def configured_providers(path: Path, env: Mapping[str, str]) -> list[Provider]:
    """The file's providers, each key's value read from ``env`` (an unset one stays absent)."""
    return [
        Provider(p, tuple(KeyRef(name, _secret(env.get(name))) for name in p.keys), str(path))
        for p in read_config(path).providers
    ]


def environment_provider(base_url: str | None, api_key: SecretStr | None, *, key_env: str) -> Provider:
    """The one provider of an environment-only setup."""
    config = ProviderConfig(name=DEFAULT_PROVIDER, base_url=base_url or "", keys=(key_env,))
    return Provider(config, (KeyRef(key_env, api_key),), "environment")


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None
