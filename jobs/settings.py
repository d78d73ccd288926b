"""Settings: one validated object built from the environment, passed down, never global.

Names every part of batcher agrees on:

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (the OpenAI SDK's own names), or ``BATCHER_BASE_URL`` /
  ``BATCHER_API_KEY``, which win when both are set;
- ``BATCHER_DATABASE_URL``: the SQL store; default a SQLite file under ``BATCHER_HOME``;
- ``BATCHER_BROKER_URL``: the Celery broker; default ``redis://127.0.0.1:6379/0``;
- ``BATCHER_REDIS_URL``: the shared rate limiter's Redis; defaults to the broker's URL;
- ``BATCHER_HOME``: where the default database and the speech results live
  (default ``~/.local/share/batcher``);
- ``BATCHER_BLOB_DIR``: a folder every machine sees (a shared mount) for the input files lines
  send (audio, images); unset, they are kept in the SQL store (``jobs.blobs``);
- ``BATCHER_ANTHROPIC_VERSION``: the ``anthropic-version`` header of Claude-native calls
  (default ``2023-06-01``);
- ``BATCHER_CONFIG``: the providers' config file (``jobs.providers``; default ``./batcher.toml``,
  else ``~/.config/batcher/batcher.toml``); without one the base URL and key above are the one
  provider;
- ``BATCHER_PROXY``: the HTTP proxy for API calls (``none``: no proxy at all); otherwise the usual
  ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` (either case) are read, and
  ``workers.proxy`` decides which applies.

The API key is a ``SecretStr``: its ``repr`` and ``str`` are masked, so it cannot reach a log by
accident. Settings are built by ``load_settings()`` at start-up, not at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.errors import ConfigError
from jobs.providers import Provider, configured_providers, environment_provider, find_config

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
_STORE_HELP = "use sqlite:///path/to/batcher.db or postgresql://user@host/db"
_USERINFO = re.compile(r"//[^/@]*@")


def masked_url(url: str) -> str:
    """The URL with any ``user:password@`` part masked, for messages."""
    return _USERINFO.sub("//***@", url)


def check_database_url(url: str) -> None:
    """Raise ``ConfigError`` unless the URL names a store batcher supports (see ``STORE_SCHEMES``)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(f"BATCHER_DATABASE_URL {masked_url(url)!r} is not a database URL; {_STORE_HELP}")
    backend = scheme.partition("+")[0].lower()
    if backend in ("mysql", "mariadb"):
        raise ConfigError(f"MySQL/MariaDB is not supported as the store ({masked_url(url)}); {_STORE_HELP}")
    if backend not in STORE_SCHEMES:
        raise ConfigError(f"BATCHER_DATABASE_URL {masked_url(url)!r} is not a supported store; {_STORE_HELP}")


def default_home() -> Path:
    """The folder for the default SQLite file and speech results."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "batcher"


class Settings(BaseSettings):
    """Everything batcher reads from the environment, validated once."""

    model_config = SettingsConfigDict(env_prefix="BATCHER_", extra="ignore", populate_by_name=True)

    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BATCHER_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BATCHER_API_KEY", "OPENAI_API_KEY")
    )
    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None
    blob_dir: Path | None = None  # input files in this shared folder instead of the SQL store
    proxy: str | None = None
    progress_interval: float = Field(default=5.0, gt=0)  # seconds between plain progress lines
    anthropic_version: str = Field(default="2023-06-01", min_length=1)  # sent on /v1/messages calls
    config: Path | None = None  # BATCHER_CONFIG: the providers' file (jobs.providers)
    https_proxy: str | None = Field(default=None, validation_alias=AliasChoices("HTTPS_PROXY", "https_proxy"))
    http_proxy: str | None = Field(default=None, validation_alias=AliasChoices("HTTP_PROXY", "http_proxy"))
    all_proxy: str | None = Field(default=None, validation_alias=AliasChoices("ALL_PROXY", "all_proxy"))
    no_proxy: str | None = Field(default=None, validation_alias=AliasChoices("NO_PROXY", "no_proxy"))

    @field_validator("base_url")
    @classmethod
    def _empty_base_url(cls, value: str | None) -> str | None:
        return value or None  # checked when a command calls the API (``checked_base_url``)

    def checked_base_url(self) -> str | None:
        """The base URL, or a ``ConfigError`` naming the variable it came from and what is wrong.

        Checked here, not at start-up, so that a bad URL does not stop commands that never call
        the API (``jobs``, ``status``, ``export``).
        """
        if self.base_url is None:
            return None
        problem = base_url_problem(self.base_url)
        if problem is not None:
            name = "BATCHER_BASE_URL" if os.environ.get("BATCHER_BASE_URL") else "OPENAI_BASE_URL"
            raise ConfigError(f"invalid settings: {name} {problem}")
        return self.base_url

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value:
            try:
                check_database_url(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value or None

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value is None or value == "" or value.strip().lower() == "none":
            return value or None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"must be an http(s) proxy URL like http://proxy.example.com:3128 or none (got {value!r})"
            )
        return value.strip()

    @property
    def proxy_env(self) -> dict[str, str]:
        """The environment's proxy variables, as ``workers.proxy`` reads them."""
        names = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")
        return {name: value for name in names if (value := getattr(self, name))}

    @property
    def effective_database_url(self) -> str:
        """The store URL: ``BATCHER_DATABASE_URL`` or the default SQLite file."""
        return self.database_url or f"sqlite:///{self.home / 'batcher.db'}"

    @property
    def uses_default_store(self) -> bool:
        """True when the store is the default file under ``BATCHER_HOME`` (whose folder batcher makes)."""
        return not self.database_url

    @property
    def effective_redis_url(self) -> str:
        """The limiter's Redis: ``BATCHER_REDIS_URL`` or the broker's URL."""
        return self.redis_url or self.broker_url

    @property
    def results_dir(self) -> Path:
        """Where binary results (speech audio) are written."""
        return self.home / "results"

    def config_path(self) -> Path | None:
        """The providers' config file in force, if any."""
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return find_config(self.config, cwd=Path.cwd(), config_home=config_home)

    def providers(self) -> list[Provider]:
        """The configured providers with their keys, or the environment's one (``default``)."""
        path = self.config_path()
        if path is not None:
            return configured_providers(path, os.environ)
        key_env = "BATCHER_API_KEY" if os.environ.get("BATCHER_API_KEY") else "OPENAI_API_KEY"
        return [environment_provider(self.base_url, self.api_key, key_env=key_env)]

    def secret_values(self) -> list[str]:
        """The secrets to scrub from anything batcher writes: every key and proxy passwords."""
        secrets = [self.api_key.get_secret_value()] if self.api_key else []
        if self.config_path() is not None:
            secrets += [k.value.get_secret_value() for p in self.providers() for k in p.keys if k.value]
        proxies = [self.proxy, self.https_proxy, self.http_proxy, self.all_proxy]
        return secrets + [pw for url in proxies if url and (pw := _password(url))]


def base_url_problem(value: str) -> str | None:
    """What is wrong with a base URL, or None."""
    parts = urlsplit(value)
    if "@" in parts.netloc:
        return (
            "must not carry a user or password (user:password@host); give the key in "
            f"OPENAI_API_KEY (or BATCHER_API_KEY) instead (got {masked_url(value)!r})"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an http(s) URL like https://relay.example.com/v1 (got {value!r})"
    if parts.query or parts.fragment:
        return f"must not carry a query string or fragment (got {value!r})"
    return None


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and explicit overrides), or say what is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {details}") from None
